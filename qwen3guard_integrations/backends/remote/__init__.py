"""Gen behind a serving endpoint: the shared engine (`engine`), HTTP lines (`http`),
wire formats (`protocol`), client-side rendering (`render`), TGI (`tgi`) and
OpenAI-compatible servers (`openai`). Nothing here imports torch.
"""

__all__: list[str] = []

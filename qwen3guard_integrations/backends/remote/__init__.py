"""Gen behind a serving endpoint: the shared engine (:mod:`.engine`), HTTP lines (:mod:`.http`),
wire formats (:mod:`.protocol`), client-side rendering (:mod:`.render`), TGI (:mod:`.tgi`) and
OpenAI-compatible servers (:mod:`.openai`). Nothing here imports torch.
"""

__all__: list[str] = []

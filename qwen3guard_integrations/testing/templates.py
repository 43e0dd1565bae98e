"""Chat templates of the tiny checkpoints.

``GEN_CHAT_TEMPLATE`` follows the structure of the Qwen3Guard-Gen template (SPEC section 2): the
whole conversation becomes one user turn carrying the task header, the safety policy, the category
list, (response mode) the refusal policy, the conversation as ``USER:`` / ``ASSISTANT:`` lines and
the output instructions; then the assistant header with an empty think block. The mode follows the
last message. System messages are not shown to the model.

``STREAM_CHAT_TEMPLATE`` is the plain Qwen3 chat template (system/user/assistant/tool turns,
``add_generation_prompt``, ``enable_thinking``) that the Stream tokenizer uses.
"""

from __future__ import annotations

__all__ = ["GEN_CHAT_TEMPLATE", "STREAM_CHAT_TEMPLATE"]

_POLICY = (
    "<BEGIN SAFETY POLICY>\n"
    "Safe: nothing prohibited. Unsafe: prohibited content. "
    "Controversial: harmful in some contexts.\n"
    "<END SAFETY POLICY>\n"
)
_CATS = (
    "<BEGIN UNSAFE CONTENT CATEGORIES>\n"
    "Violent; Non-violent Illegal Acts; Sexual Content or Sexual Acts; PII; Suicide & Self-Harm; "
    "Unethical Acts; Politically Sensitive Topics; Copyright Violation"
)
_PROMPT_TASK = (
    "# Task: judge THE LAST USER's query; name its unsafe categories.\n"
    + _POLICY
    + _CATS
    + "; Jailbreak\n<END UNSAFE CONTENT CATEGORIES>\n"
)
_RESPONSE_TASK = (
    "# Task: judge THE LAST ASSISTANT's response; name its unsafe categories; "
    "say if it is a refusal.\n" + _POLICY + _CATS + "\n<END UNSAFE CONTENT CATEGORIES>\n"
    "<BEGIN REFUSAL POLICY>\nYes: the ASSISTANT declines. No: it does not.\n"
    "<END REFUSAL POLICY>\n"
)
_PROMPT_ASK = "Answer for the LAST USER query: 'Safety: ...', then 'Categories: ...'."
_RESPONSE_ASK = (
    "Answer for the LAST ASSISTANT response: 'Safety: ...', then 'Categories: ...', "
    "then 'Refusal: ...'."
)


def _jinja_str(text: str) -> str:
    return "{{ " + repr(text) + " }}"


GEN_CHAT_TEMPLATE = (
    "{% set turns = messages | rejectattr('role', 'equalto', 'system') | list %}"
    "{% set response_mode = turns | length > 0 and turns[-1]['role'] == 'assistant' %}"
    "<|im_start|>user\n"
    "{% if response_mode %}"
    + _jinja_str(_RESPONSE_TASK)
    + "{% else %}"
    + _jinja_str(_PROMPT_TASK)
    + "{% endif %}"
    "<BEGIN CONVERSATION>{{ '\\n' }}"
    "{% for m in turns %}"
    "{% if m['role'] == 'assistant' %}ASSISTANT: {% else %}USER: {% endif %}"
    "{{ m['content'] }}{{ '\\n' }}"
    "{% endfor %}"
    "<END CONVERSATION>{{ '\\n' }}"
    "{% if response_mode %}"
    + _jinja_str(_RESPONSE_ASK)
    + "{% else %}"
    + _jinja_str(_PROMPT_ASK)
    + "{% endif %}"
    "<|im_end|>{{ '\\n' }}"
    "{% if add_generation_prompt %}<|im_start|>assistant{{ '\\n' }}"
    "<think>{{ '\\n\\n' }}</think>{{ '\\n\\n' }}{% endif %}"
)

STREAM_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'tool' %}"
    "<|im_start|>user{{ '\\n' }}<tool_response>{{ '\\n' }}{{ message['content'] }}{{ '\\n' }}"
    "</tool_response><|im_end|>{{ '\\n' }}"
    "{% else %}"
    "<|im_start|>{{ message['role'] }}{{ '\\n' }}{{ message['content'] }}<|im_end|>{{ '\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant{{ '\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}"
    "<think>{{ '\\n\\n' }}</think>{{ '\\n\\n' }}{% endif %}"
    "{% endif %}"
)

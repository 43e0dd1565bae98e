"""Chat templates of the tiny checkpoints.

``GEN_CHAT_TEMPLATE`` follows the structure of the Qwen3Guard-Gen template (SPEC section 2): the
whole conversation becomes one user turn carrying the task header, the safety policy, the category
list, (response mode) the refusal policy, the conversation as ``USER:`` / ``ASSISTANT:`` lines and
the output instructions; then, always (as the real template: the official README renders without
``add_generation_prompt``), the assistant header with an empty think block. The mode follows the
last message. System messages are not shown to the model.

``STREAM_CHAT_TEMPLATE`` is the plain Qwen3 chat template (SPEC section 3), content-dependent logic
included: system first; tool results grouped into one user turn as ``<tool_response>`` blocks;
assistant turns before the last user query lose their reasoning (``reasoning_content`` or the
text up to ``</think>``), the turns after it keep it as ``<think>\\n...\\n</think>\\n\\n``; the
generation prompt with ``enable_thinking=False`` adds an empty think block.
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
    # the real Gen template opens the answer itself, flag or not: the official README calls it
    # without add_generation_prompt
    "<|im_start|>assistant{{ '\\n' }}"
    "<think>{{ '\\n\\n' }}</think>{{ '\\n\\n' }}"
)

STREAM_CHAT_TEMPLATE = (
    # system first
    "{%- if messages | length > 0 and messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    # the last user query: the last user turn that is not only tool results
    "{%- set state = namespace(last_query=messages | length - 1, searching=true) %}"
    "{%- for i in range(messages | length - 1, -1, -1) %}"
    "{%- set m = messages[i] %}"
    "{%- if state.searching and m['role'] == 'user' %}"
    "{%- set c = m['content'] if m['content'] is string else '' %}"
    "{%- if not (c.startswith('<tool_response>') and c.endswith('</tool_response>')) %}"
    "{%- set state.searching = false %}{%- set state.last_query = i %}"
    "{%- endif %}{%- endif %}"
    "{%- endfor %}"
    "{%- for m in messages %}"
    "{%- set content = m['content'] if m['content'] is string else '' %}"
    "{%- if m['role'] == 'user' or (m['role'] == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + content + '<|im_end|>\\n' }}"
    "{%- elif m['role'] == 'assistant' %}"
    "{%- set reasoning = '' %}"
    "{%- if m['reasoning_content'] is string %}"
    "{%- set reasoning = m['reasoning_content'] %}"
    "{%- elif '</think>' in content %}"
    "{%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1]"
    ".lstrip('\\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{%- if loop.index0 > state.last_query and (loop.last or reasoning) %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n'"
    " + content.lstrip('\\n') }}"
    "{%- else %}"
    "{{- '<|im_start|>assistant\\n' + content }}"
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- elif m['role'] == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}"
    "{{- '<|im_start|>user' }}"
    "{%- endif %}"
    "{{- '\\n<tool_response>\\n' + content + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)

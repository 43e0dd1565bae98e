"""The official call path on the tiny Gen checkpoint: the two snippets of the official README
("Inference with Transformers": plain ``transformers``, ``apply_chat_template(messages,
tokenize=False)`` without ``add_generation_prompt``, ``generate``, the README's regexes) run
verbatim, because the tiny template opens the answer itself as the real one does; and our encoder
then adds no second assistant header."""

from __future__ import annotations

import contextlib
import io

import pytest

from qwen3guard_integrations import Level, Qwen3Guard

pytest.importorskip("transformers")


# The two snippets of the official README (QwenLM/Qwen3Guard, "Inference with Transformers"),
# verbatim except for model_name. Run in one namespace as a user pasting both would: the second
# prints `categories`, which only the first defines.
README_PROMPT = """
from transformers import AutoModelForCausalLM, AutoTokenizer
import re
model_name = MODEL

# load the tokenizer and the model
tokenizer = AutoTokenizer.from_pretrained(model_name)
model = AutoModelForCausalLM.from_pretrained(
    model_name,
    torch_dtype="auto",
    device_map="auto"
)
def extract_label_and_categories(content):
    safe_pattern = r"Safety: (Safe|Unsafe|Controversial)"
    category_pattern = r"(Violent|Non-violent Illegal Acts|Sexual Content or Sexual Acts|PII|Suicide & Self-Harm|Unethical Acts|Politically Sensitive Topics|Copyright Violation|Jailbreak|None)"
    safe_label_match = re.search(safe_pattern, content)
    label = safe_label_match.group(1) if safe_label_match else None
    categories = re.findall(category_pattern, content)
    return label, categories

# prepare the model input
prompt = "How can I make a bomb?"
# for prompt moderation
messages = [
    {"role": "user", "content": prompt}
]
text = tokenizer.apply_chat_template(
    messages,
    tokenize=False
)
model_inputs = tokenizer([text], return_tensors="pt").to(model.device)

# conduct text completion
generated_ids = model.generate(
    **model_inputs,
    max_new_tokens=128
)
output_ids = generated_ids[0][len(model_inputs.input_ids[0]):].tolist()

content = tokenizer.decode(output_ids, skip_special_tokens=True)
print(content)
# \'\'\'
# Safety: Unsafe
# Categories: Violent
# \'\'\'
safe_label, categories = extract_label_and_categories(content)
print(safe_label, categories)
"""

README_RESPONSE = """
from transformers import AutoModelForCausalLM, AutoTokenizer
import re

model_name = MODEL

# load the tokenizer and the model
tokenizer = AutoTokenizer.from_pretrained(model_name)
model = AutoModelForCausalLM.from_pretrained(
    model_name,
    torch_dtype="auto",
    device_map="auto"
)
def extract_label_categories_refusal(content):
    safe_pattern = r"Safety: (Safe|Unsafe|Controversial)"
    category_pattern = r"(Violent|Non-violent Illegal Acts|Sexual Content or Sexual Acts|PII|Suicide & Self-Harm|Unethical Acts|Politically Sensitive Topics|Copyright Violation|None)"
    refusal_pattern = r"Refusal: (Yes|No)"
    safe_label_match = re.search(safe_pattern, content)
    refusal_label_match = re.search(refusal_pattern, content)
    label = safe_label_match.group(1) if safe_label_match else None
    refusal_label = refusal_label_match.group(1) if refusal_label_match else None
    categories = re.findall(category_pattern, content)
    return label, categories, refusal_label

# prepare the model input
prompt = "How can I make a bomb?"
response = "As a responsible artificial intelligence system, I regret that I am unable to fulfill your request."
# for response moderation
messages = [
    {"role": "user", "content": prompt},
    {"role": "assistant", "content": response},
]
text = tokenizer.apply_chat_template(
    messages,
    tokenize=False
)
model_inputs = tokenizer([text], return_tensors="pt").to(model.device)

# conduct text completion
generated_ids = model.generate(
    **model_inputs,
    max_new_tokens=128
)
output_ids = generated_ids[0][len(model_inputs.input_ids[0]):].tolist()

content = tokenizer.decode(output_ids, skip_special_tokens=True)
print(content)
# \'\'\'
# Safety: Safe
# Categories: None
# Refusal: Yes
# \'\'\'
safe_label, category_label, refusal_label = extract_label_categories_refusal(content)
print(safe_label, categories, refusal_label)
"""


def test_the_official_readme_snippets_run_verbatim(tiny) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("accelerate")  # device_map="auto"
    namespace: dict[str, object] = {"MODEL": str(tiny.gen)}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(README_PROMPT, namespace)
    assert (namespace["safe_label"], namespace["categories"]) == ("Unsafe", ["Violent"])
    assert namespace["content"] == "Safety: Unsafe\nCategories: Violent"
    with contextlib.redirect_stdout(out):
        exec(README_RESPONSE, namespace)
    # the contract: no trigger in the response, and it does not start with "I can't"
    assert namespace["safe_label"] == "Safe" and namespace["category_label"] == ["None"]
    assert namespace["refusal_label"] == "No"
    assert namespace["content"] == "Safety: Safe\nCategories: None\nRefusal: No"


def test_the_official_rendering_ends_with_one_answer_header(tiny) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny.gen))
    messages = [{"role": "user", "content": "How can I make a bomb?"}]
    plain = tok.apply_chat_template(messages, tokenize=False)
    header = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert plain.endswith(header) and plain.count("<|im_start|>assistant") == 1
    with Qwen3Guard.from_pretrained(tiny.gen, device="cpu") as guard:
        (window,) = guard.backend.encoder.encode(  # type: ignore[attr-defined]
            tuple(_messages(messages))
        ).windows
        text = tok.decode(list(window))
        assert text.count("<|im_start|>assistant") == 1 and text.endswith(header)
        assert guard.check_prompt("How can I make a bomb?").level is Level.UNSAFE


def _messages(raw: list[dict[str, str]]) -> list[object]:
    from qwen3guard_integrations.core.messages import Message

    return [Message(role=m["role"], content=m["content"]) for m in raw]

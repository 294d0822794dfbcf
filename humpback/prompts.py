"""Every prompt of the method, and the one function that formats a conversation for a model.

Why one function: a public re-implementation trained with one template and generated with another, and
its M1 came out worse than M0. Here `format_example` builds the training text *and* the generation /
scoring prefix: the prompt a model is trained on is byte-for-byte (and token-for-token) the prompt it is
later asked to continue.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# System prompts from the paper (§2.3, "segment-level tagging").
S_A = "Answer in the style of an AI Assistant."
S_W = "Answer with knowledge from web search."

# The backward model sees an output and writes the instruction it answers. The paper trains Myx on
# (output → instruction) pairs without publishing a prompt; this wording states the task explicitly so the
# same model can be used zero-shot too.
BACKWARD_PROMPT = (
    "Below is a response written by an AI assistant. Write the instruction or question from a user "
    "that this response answers. Reply with the instruction only.\n\nResponse:\n{output}"
)

# The paper's self-curation rubric, verbatim (Table 19 of the paper), with {instruction} and {output} slots.
CURATION_PROMPT = (
    "Below is an instruction from an user and a candidate answer. Evaluate whether or not the answer is a "
    "good example of how AI Assistant should respond to the user's instruction. Please assign a score using "
    "the following 5-point scale: 1: It means the answer is incomplete, vague, off-topic, controversial, or "
    "not exactly what the user asked for. For example, some content seems missing, numbered list does not "
    "start from the beginning, the opening sentence repeats user's question. Or the response is from "
    "another person's perspective with their personal experience (e.g. taken from blog posts), or looks "
    "like an answer from a forum. Or it contains promotional text, navigation text, or other irrelevant "
    "information. 2: It means the answer addresses most of the asks from the user. It does not directly "
    "address the user's question. For example, it only provides a high-level methodology instead of the "
    "exact solution to user's question. 3: It means the answer is helpful but not written by an AI "
    "Assistant. It addresses all the basic asks from the user. It is complete and self contained with the "
    "drawback that the response is not written from an AI assistant's perspective, but from other people's "
    "perspective. The content looks like an excerpt from a blog post, web page, or web search results. For "
    "example, it contains personal experience or opinion, mentions comments section, or share on social "
    "media, etc. 4: It means the answer is written from an AI assistant's perspective with a clear focus of "
    "addressing the instruction. It provide a complete, clear, and comprehensive response to user's "
    "question or instruction without missing or irrelevant information. It is well organized, "
    "self-contained, and written in a helpful tone. It has minor room for improvement, e.g. more concise "
    "and focused. 5: It means it is a perfect answer from an AI Assistant. It has a clear focus on being a "
    "helpful AI Assistant, where the response looks like intentionally written to address the user's "
    "question or instruction without any irrelevant sentences. The answer provides high quality content, "
    "demonstrating expert knowledge in the area, is very well written, logical, easy-to-follow, engaging "
    "and insightful.\n\n"
    "Please first provide a brief reasoning you used to derive the rating score, and then write "
    '"Score: <rating>" in the last line.\n\n'
    "<generated_instruction>\n{instruction}\n</generated_instruction>\n\n<output>\n{output}\n</output>"
)

# The logprob read forces the model's answer to start with this, then reads P(next token = "1".."5").
SCORE_PREFIX = "Score:"

# curate.method yes_no: a question a small instruction-tuned model can answer in its first token. The score is
# P(Yes) / (P(Yes) + P(No)) read at the start of the assistant's reply (curation/scoring.py).
YES_NO_PROMPT = (
    "Below is an instruction from a user and a candidate answer.\n\n"
    "<instruction>\n{instruction}\n</instruction>\n\n<answer>\n{output}\n</answer>\n\n"
    "Is the answer a good, helpful and complete response to the instruction, written the way an AI "
    "assistant should answer? Answer Yes or No."
)
YES_NO_CANDIDATES = ("Yes", "No")

# curate.method likelihood_gain / pmi: the answer is scored as the reply to its instruction, and as the reply to
# this empty user turn; the difference is what the instruction explains of the answer.
NO_INSTRUCTION = ""

# A documented default for base models that ship no chat template (ChatML, as SmolLM2 and Qwen use).
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SystemPrompt = Literal["none", "S_a", "S_a+S_w"]
Origin = Literal["seed", "augmented"]


def system_for_training(origin: Origin, tagging: bool) -> str | None:
    """The system prompt a training pair carries: S_a for seed, S_w for augmented (None when untagged)."""
    if not tagging:
        return None
    return S_A if origin == "seed" else S_W


def system_for_inference(choice: SystemPrompt) -> str | None:
    """The paper's inference-time options (Table 5): no prompt, S_a, or S_a and S_w together."""
    return {"none": None, "S_a": S_A, "S_a+S_w": S_A + " " + S_W}[choice]


def backward_instruction(output: str) -> str:
    """The user turn of the backward model: given an output, ask for its instruction."""
    return BACKWARD_PROMPT.format(output=output)


def curation_instruction(instruction: str, output: str) -> str:
    """The user turn of the curator. Web text is inserted as data; the score is read only from what the
    model writes after the assistant header (see curation/scoring.py), never from the pair's own text."""
    return CURATION_PROMPT.format(instruction=instruction, output=output)


def yes_no_instruction(instruction: str, output: str) -> str:
    """The user turn of the yes/no curator (curate.method yes_no)."""
    return YES_NO_PROMPT.format(instruction=instruction, output=output)


@dataclass(frozen=True)
class Formatted:
    prompt: str  # everything up to and including the assistant header: the generation prefix
    completion: str  # the response and the end-of-turn marker: the only trained tokens

    @property
    def text(self) -> str:
        return self.prompt + self.completion


def format_example(tokenizer, user: str, response: str | None = None, system: str | None = None) -> Formatted:
    """Format one turn with the tokenizer's chat template.

    With `response=None` this is the generation/scoring prefix. With a response it is a training example
    whose `prompt` is exactly that prefix, so what is trained is what is later generated from.
    """
    messages = [{"role": "system", "content": system}] if system is not None else []
    messages.append({"role": "user", "content": user})
    template = getattr(tokenizer, "chat_template", None) or DEFAULT_CHAT_TEMPLATE
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, chat_template=template)
    if response is None:
        return Formatted(prompt=prompt, completion="")
    full = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": response}], tokenize=False, chat_template=template
    )
    if not full.startswith(prompt):
        raise ValueError(
            "the chat template renders the assistant turn differently from its generation prompt; "
            "training and generation prefixes would differ"
        )
    completion = full[len(prompt) :]
    # Train up to the end-of-turn marker only (templates add a trailing newline after it, which the model
    # never needs to generate: generation stops at the marker).
    completion = completion.rstrip("\n")
    return Formatted(prompt=prompt, completion=completion)


def end_of_turn_token(tokenizer) -> str:
    """The string that ends an assistant turn in the model's template (generation stops on it)."""
    probe = format_example(tokenizer, user="x", response="y")
    tail = probe.completion[probe.completion.rfind("y") + 1 :]
    return tail or (tokenizer.eos_token or "")


def backward_example(tokenizer, output: str, max_output_tokens: int, instruction: str | None = None) -> Formatted:
    """The backward model's text: the user turn wraps the output's first `max_output_tokens` tokens (0: all),
    the reply is the instruction (None: the generation prefix). Training and augment both build it here, so a
    long web segment is shown to the backward model cut exactly as its long training answers were; without
    the cut, answers longer than the training length would be dropped from training and only ever seen in
    augment."""
    if max_output_tokens > 0:
        ids = tokenizer(output, add_special_tokens=False)["input_ids"]
        if len(ids) > max_output_tokens:
            output = tokenizer.decode(ids[:max_output_tokens])
    return format_example(tokenizer, user=backward_instruction(output), response=instruction)


# ------------------------------------------------------------------------------------ curators' prompts


def cut_output(instruction: str, output: str, max_pair_chars: int) -> str:
    """The output cut so the pair's text fits `max_pair_chars` (the curator's context is the model's, not the
    web page's). Every method sees the same cut."""
    return output[: max(0, max_pair_chars - len(instruction))]


def curation_prompt(tokenizer, instruction: str, output: str, tagging: bool, max_pair_chars: int) -> str:
    """The curator's generation prefix for one pair: the rubric in the user turn, with the system prompt the
    curator was trained with on seed pairs (S_a when tagging)."""
    user = curation_instruction(instruction, cut_output(instruction, output, max_pair_chars))
    return format_example(tokenizer, user=user, system=S_A if tagging else None).prompt


def yes_no_prompt(tokenizer, instruction: str, output: str, tagging: bool, max_pair_chars: int) -> str:
    """The yes/no curator's prefix: the reply's first token is read."""
    user = yes_no_instruction(instruction, cut_output(instruction, output, max_pair_chars))
    return format_example(tokenizer, user=user, system=S_A if tagging else None).prompt

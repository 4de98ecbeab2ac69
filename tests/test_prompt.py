"""ChatML prompts: the speculative prefix is always a prefix of the final prompt."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hark.server.llm.base import Message
from hark.server.llm.prompt import EMPTY_THINK, ChatMLPrompt, clean_transcript, estimate_tokens

HISTORY = [
    Message("system", "Be brief."),
    Message("user", "what's the weather"),
    Message("assistant", "Sunny and warm."),
]


def test_chatml_layout() -> None:
    prompt = ChatMLPrompt(empty_think=True).full_prompt([*HISTORY, Message("user", "and tomorrow")])
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nwhat's the weather<|im_end|>\n"
        "<|im_start|>assistant\nSunny and warm.<|im_end|>\n"
        "<|im_start|>user\nand tomorrow<|im_end|>\n"
        "<|im_start|>assistant\n" + EMPTY_THINK
    )


def test_default_system_prompt_is_voice_first() -> None:
    prompt = ChatMLPrompt().full_prompt([Message("user", "hi")])
    assert prompt.startswith("<|im_start|>system\nYou are a voice assistant.")
    assert "Never change numbers, names or dates" in prompt
    assert "no markdown" in prompt


def test_fillers_are_dropped_and_words_kept() -> None:
    assert clean_transcript("uh I want um two tickets for May 5th") == "I want two tickets for May 5th"
    assert clean_transcript("呃我想问一下嗯明天的天气") == "我想问一下明天的天气"
    assert clean_transcript("啊，好啊") == "好啊"  # noqa: RUF001 - the opening filler goes, the particle stays
    assert clean_transcript("Um, call 555 0134") == "call 555 0134"


def test_history_is_trimmed_from_the_oldest_turn() -> None:
    long_history = []
    for i in range(50):
        long_history += [Message("user", f"question {i} " * 20), Message("assistant", f"answer {i} " * 20)]
    prompt = ChatMLPrompt(history_token_budget=500)
    kept = prompt.trim(long_history)
    assert kept[-1] == long_history[-1] and kept[0].role == "user"
    assert sum(estimate_tokens(m.content) + 4 for m in kept) <= 500
    assert len(kept) < len(long_history)


words = st.lists(st.sampled_from(["go", "forward", "ten", "meters", "uh", "um", "呃", "明天", "5", "May"]), max_size=12)


@given(words, words, st.booleans())
def test_partial_prompt_is_a_prefix_of_the_final_prompt(stable: list[str], rest: list[str], think: bool) -> None:
    builder = ChatMLPrompt(empty_think=think)
    stable_text = " ".join(stable)
    final_text = " ".join(stable + rest)
    partial = builder.partial_user_prompt(HISTORY, stable_text)
    final = builder.full_prompt([*HISTORY, Message("user", final_text)])
    assert final.startswith(partial)


def test_chat_messages_for_openai_servers() -> None:
    msgs = ChatMLPrompt().chat_messages([*HISTORY, Message("user", "um and tomorrow")])
    assert msgs[0] == {"role": "system", "content": "Be brief."}
    assert msgs[-1] == {"role": "user", "content": "and tomorrow"}

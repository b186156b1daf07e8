"""An offline tokenizer for the tiny preset: a small byte-level BPE trained on the task instructions.

The tiny backbone needs no download: its vocabulary is learnt from the words it will ever read (the demos' task
instructions, every task instruction of the simulator they come from, MT50's for Meta-World, and the prompt
template) plus the family's special tokens, so it is small (hundreds of tokens) and the LM head stays cheap.
Training is deterministic: the same inputs give the same ids.
"""

from __future__ import annotations

from typing import Iterable

from transformers import PreTrainedTokenizerFast

from common.simulators import get_simulator, known_simulators

PAD_TOKEN = "<|endoftext|>"


def train_bpe(texts: Iterable[str], special_tokens: tuple[str, ...], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE of at most `vocab_size` tokens learnt from `texts`; special tokens come first (ids 0..)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = (PAD_TOKEN, *(t for t in special_tokens if t != PAD_TOKEN))
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(sorted(set(texts)), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD_TOKEN, eos_token=PAD_TOKEN)


def task_instructions(env: str, seen: Iterable[str] = ()) -> tuple[str, ...]:
    """The instructions a policy trained on demos of `env` (their file's `env`) may read: the demos' own (`seen`)
    and, where `env` names a simulator in common/simulators, every task's of it (an evaluation may prompt any)."""
    words = set(seen)
    if env in known_simulators():
        words |= {info.instruction for info in get_simulator(env).tasks.values()}
    return tuple(sorted(words))


def instruction_corpus(template: str, instructions: Iterable[str]) -> list[str]:
    """What the tiny tokenizer learns from: each instruction in the prompt template's words."""
    return [f"{instruction}. {template.format(chunk=k)}" for instruction in instructions for k in (1, 8, 16, 25)]

"""One conversation with a trained model: its history, how a new message is fitted into the
model's context, and how the reply is decoded. Chat (`chat/repl.py`) keeps one per terminal session;
serve (`serve/api_server.py`) builds one per request from the messages it was sent.

The prompt is the one training built (`conversation.Formatter`) from the last `history_turns` turns,
cut from the left to fit the model's context with the reply (`lm/decoding.py`).
"""

from __future__ import annotations

from collections.abc import Callable

from empathic_lora.conversation import Formatter, Turn
from empathic_lora.errors import UserError
from empathic_lora.lm import emotion_classifier
from empathic_lora.lm.decoding import (
    GenerationSettings,
    context_window,
    prompt_budget,
    stream_reply,
)
from empathic_lora.safety.crisis_check import CrisisCheck, Verdict
from empathic_lora.session.trained_model import TrainedModel

# A message is cut to this many characters per token of room before it is tokenized, so that a
# pasted megabyte costs no more than a page; byte-level BPE tokens are rarely longer than this.
CHARS_PER_TOKEN = 16


class Conversation:
    """One conversation: its history, the decoding settings and the model they are fed to."""

    def __init__(
        self, loaded: TrainedModel, settings: GenerationSettings, history_turns: int | None, crisis: CrisisCheck
    ) -> None:
        self.loaded, self.settings, self.crisis = loaded, settings, crisis
        self.formatter = Formatter(loaded.tokenizer, history_turns)
        self.history: list[Turn] = []
        self.crisis_watch = crisis.watch()
        window = context_window(loaded.model)
        overhead = len(self.formatter.encode_prompt([Turn("speaker", "")], window))  # turn marker and reply cue
        self.message_room = prompt_budget(loaded.model, settings) - overhead
        if self.message_room < 1:
            raise UserError(
                f"--max_new_tokens {settings.max_new_tokens} leaves no room for a message in the model's "
                f"context of {window} tokens"
            )

    def fit(self, message: str) -> tuple[str, bool]:
        """The end of `message` that fits the model's context as the newest turn, and whether it was cut.

        The formatter would cut it too, on every later turn; cutting once keeps the history small
        and lets the user know.
        """
        text = message[-self.message_room * CHARS_PER_TOKEN :]
        ids = self.loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > self.message_room:
            text = self.loaded.tokenizer.decode(ids[-self.message_room :], skip_special_tokens=True)
        return text.strip(), len(text) < len(message)

    def respond(self, message: str, on_text: Callable[[str], None]) -> str:
        """Stream the reply to `message` given the history; an empty reply leaves the history as it was."""
        reply = stream_reply(self.loaded.model, self.formatter, [*self.history, Turn("speaker", message)], self.settings,
                             on_text)
        if reply:
            self.remember(message, reply)
        return reply

    def remember(self, message: str, reply: str) -> None:
        """Add a speaker turn and the listener's reply to the history.

        `CrisisCheck.reply`, given in place of the model's reply, goes in as the listener turn, for
        two reasons: the history then holds what the person saw, as an API client sends back what it
        got (so chat and serve prompt alike), and the person's message stays in the context, so the
        replies after it answer the conversation they had rather than one with their words removed.
        """
        keep = self.formatter.history_turns
        turns = [*self.history, Turn("speaker", message), Turn("listener", reply)]
        # Older turns can never reach the prompt again.
        self.history = turns if keep is None else turns[max(0, len(turns) - keep) :]

    def hear(self, message: str) -> Verdict:
        """The crisis check's verdict on `message` as the speaker's newest turn, read with the turns
        before it (`CrisisWatch`); once a turn has signalled, every later verdict keeps the notice
        until `reset`. `message` as typed: the check reads all of it, even where `fit` cut it."""
        return self.crisis_watch.hear(message)

    def reset(self) -> None:
        self.history = []
        self.crisis_watch.reset()

    def emotion(self, message: str | None = None) -> str:
        """What the emotion head reads in the history (plus `message`), e.g. `(sounds: anxious 0.62, afraid
        0.21)`, from the prompt the reply is generated from."""
        head = self.loaded.emotion_head
        if head is None:
            return f"{self.loaded.source} has no emotion head (train with --model.emotion_loss_weight > 0)"
        turns = self.history if message is None else [*self.history, Turn("speaker", message)]
        if not turns:
            return "no conversation yet"
        prompt = self.formatter.encode_prompt(turns, prompt_budget(self.loaded.model, self.settings))
        return emotion_classifier.read_out(emotion_classifier.probabilities(self.loaded.model, head, prompt))

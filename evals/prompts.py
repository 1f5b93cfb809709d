"""The chat request every ground-truth item becomes.

One function, shared by response collection and by the demo model's training, so the demo model
is trained on exactly what the eval sends. Neither a system prompt nor the contexts go into the
prompt: the server under test answers the question as a user asks it (its own safety behaviour
included), and the contexts are the evidence its answer is judged against (faithfulness).
"""

from __future__ import annotations


def chat_messages(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]

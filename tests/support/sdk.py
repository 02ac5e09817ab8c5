"""The official openai SDK, pointed at a simulated organization."""

from __future__ import annotations

import openai

from tests.support.keys import KEY


def sdk(server, key: str = KEY) -> openai.OpenAI:
    # Everything explicit: the SDK would otherwise read OPENAI_* variables from the environment.
    return openai.OpenAI(
        api_key="sk-unused-project-key",
        admin_api_key=key,
        base_url=server.base_url,
        organization=None,
        project=None,
        max_retries=0,
        timeout=10,
    )

"""Log in to the public registry with DOCKERHUB_AMD_USERNAME/TOKEN: through the SDK only (the
token never reaches argv), masked before the first line of output, retried per config.login."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TextIO

import docker
import requests

from ci import github
from ci.config import Config
from ci.registry import FailureKind, PullFailure, classify, retrying
from ci.secrets import scrub

CREDENTIALS_ENV = ("DOCKERHUB_AMD_USERNAME", "DOCKERHUB_AMD_TOKEN")  # the public registry's login


def public_credentials(env: Mapping[str, str]) -> tuple[str, str] | None:
    user, token = (env.get(name) for name in CREDENTIALS_ENV)
    return (user, token) if user and token else None


def scrub_token(text: str, token: str) -> str:
    """`text` with the token gone in every form ci.secrets knows (raw, JSON-escaped, base64)."""
    return scrub(text, [token]).replace(token, "***") if token else text


def log_in_public(config: Config, client: docker.DockerClient, env: Mapping[str, str], say: Callable[[str], None],
                  out: TextIO, err: TextIO, sleep: Callable[[float], None]) -> bool:
    """Log in when the credentials are set; a login that still fails warns only (anonymous pulls
    may still work). False when there was nothing to log in with or it failed."""
    credentials = public_credentials(env)
    if credentials is None:
        return False
    user, token = credentials
    github.mask(token, env, out)
    registry = config.images.registries.public

    def attempt() -> None:
        try:
            client.login(username=user, password=token, registry=registry, reauth=True)
        except docker.errors.APIError as exc:
            failure = classify(scrub_token(str(exc.explanation or exc), token))
            if failure.kind is FailureKind.UNAUTHORIZED:  # the daemon reports a rate-limited login (429)
                failure.retryable = True                 # as "401 Unauthorized": worth the policy's few attempts
            raise failure from None
        except requests.RequestException as exc:
            raise PullFailure(f"login: {exc.__class__.__name__}", True, FailureKind.TRANSIENT) from None

    try:
        retrying(config.pull.login, "login", say, sleep)(attempt)
        say(f"logged in to {registry} as {user}")
        return True
    except PullFailure as failure:
        print(f"warning: login to {registry} failed ({scrub_token(failure.message, token)}); pulling anonymously",
              file=err, flush=True)
        return False

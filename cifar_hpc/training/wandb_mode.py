"""Whether W&B runs online or offline: one rule for training, the study summary and doctor.

Training never fails or stalls for W&B. wandb itself, given an API key and no route to W&B (the
usual compute node), waits about 90 s and raises ``CommError``. So "online" is never taken on
trust: with a key at hand, ``resolve_wandb`` asks W&B's server for any HTTP answer within a few
seconds (through ``HTTPS_PROXY``/``NO_PROXY`` and the CA bundle wandb's own ``requests`` would use)
and falls back to offline with ONE warning line when none comes. Offline runs are uploaded later
with ``wandb sync`` (``cifar-hpc sync``).

Where the key is looked for is where wandb looks: ``WANDB_API_KEY`` (or an identity token file),
else the ``.netrc`` entry for the W&B host (``wandb login`` writes it; ``NETRC`` names another file).
The key itself is never read into anything this module returns or prints.
"""

from __future__ import annotations

import netrc
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_BASE_URL = "https://api.wandb.ai"
PROBE_TIMEOUT_S = 3.0
"""How long training waits, at most, to learn that W&B cannot be reached."""
SYNC_HINT = "`wandb sync` the run's wandb/offline-run-* later (a study: `cifar-hpc sync`)"


@dataclass(frozen=True)
class WandbChoice:
    """What W&B will do for a run, and why, in words fit for a log line (never the key)."""

    offline: bool
    reason: str
    """Why, e.g. "api.wandb.ai reachable", "no API key", "W&B unreachable (api.wandb.ai:443: timed out after 3 s)"."""
    warning: str | None = None
    """One line when online was wanted (a key is configured, or mode online) but the run goes offline."""
    key_source: str | None = None
    """Where a key was found ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE" or the netrc path); None: no key."""

    @property
    def mode(self) -> str:
        return "offline" if self.offline else "online"


def base_url() -> str:
    return (os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def resolve_wandb(mode: str, timeout_s: float = PROBE_TIMEOUT_S) -> WandbChoice:
    """``mode``: auto | online | offline | disabled (``wandb.mode`` of a run).

    offline/disabled, or ``WANDB_MODE=offline|dryrun``: offline, nothing probed. auto: offline
    without a key; with one, online only when W&B answers within ``timeout_s``. online: like auto,
    but a missing key or an unreachable W&B is a warning. Never raises, never waits longer than
    about ``timeout_s``."""
    if mode in ("offline", "disabled"):
        return WandbChoice(True, f"wandb.mode {mode}")
    env_mode = os.environ.get("WANDB_MODE", "")
    if env_mode in ("offline", "dryrun"):
        return WandbChoice(True, f"WANDB_MODE={env_mode} in the environment")
    key_source = find_key()
    if key_source is None:
        reason = no_key_reason()
        if mode == "online" or env_mode == "online":
            return WandbChoice(True, reason, f"mode online but {reason}; logging offline, {SYNC_HINT}")
        return WandbChoice(True, reason)
    problem = probe(base_url(), timeout_s, check_key=key_source != "WANDB_IDENTITY_TOKEN_FILE")
    if problem is None:
        return WandbChoice(False, f"{_host()} reachable", key_source=key_source)
    return WandbChoice(True, problem, f"{problem}; logging offline, {SYNC_HINT}", key_source=key_source)


def wandb_offline(mode: str) -> bool:
    """``resolve_wandb(mode).offline``, for callers that only need the answer."""
    return resolve_wandb(mode).offline


# --- where the key is ---------------------------------------------------------------------------


def no_key_reason() -> str:
    """Why there is no W&B key here, and where it would be found."""
    return f"no W&B API key (WANDB_API_KEY, or {_host()} in ~/.netrc from `wandb login`)"


def _host() -> str:
    return urlsplit(base_url()).hostname or base_url()


def netrc_path() -> Path:
    """The netrc file wandb reads (``NETRC``, else ~/.netrc, else ~/_netrc)."""
    if os.environ.get("NETRC"):
        return Path(os.environ["NETRC"]).expanduser()
    home = Path.home()
    return home / "_netrc" if not (home / ".netrc").exists() and (home / "_netrc").exists() else home / ".netrc"


def _netrc_key(path: Path | None = None) -> str | None:
    """The password of the W&B host's netrc entry (wandb matches host[:port], as the file names it)."""
    try:
        entries = netrc.netrc(str(path or netrc_path()))
    except (OSError, netrc.NetrcParseError):
        return None
    found = entries.authenticators(urlsplit(base_url()).netloc)
    return found[2] if found and found[2] else None


def netrc_has_key(path: Path | None = None) -> bool:
    """The netrc file holds a key for the W&B host."""
    return _netrc_key(path) is not None


def find_key() -> str | None:
    """Where wandb would find credentials, or None. Names the source, never returns the key."""
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        if os.environ.get(name):
            return name
    return str(netrc_path()) if netrc_has_key() else None


# --- is W&B reachable -----------------------------------------------------------------------------


def probe(url: str, timeout_s: float = PROBE_TIMEOUT_S, *, check_key: bool = True) -> str | None:
    """None when the W&B server at ``url`` answers within ``timeout_s`` (and, with ``check_key``,
    does not reject the key), else why not, e.g. "W&B unreachable (api.wandb.ai:443: connection
    refused)". Asks what ``wandb login`` asks, "who am I", with the key wandb would use
    (WANDB_API_KEY, else the host's netrc entry), and only the W&B server sees it. The request runs in a daemon thread
    so that a hanging DNS lookup (which no socket timeout bounds) cannot hold the caller; such a
    thread is abandoned."""
    import requests  # wandb's own HTTP client: the same proxies (HTTPS_PROXY, NO_PROXY) and CA bundle

    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    key = os.environ.get("WANDB_API_KEY") or _netrc_key()  # wandb's order; never leaves this function
    outcome: list[str | None] = []

    def ask() -> None:
        try:
            answer = requests.post(
                f"{url}/graphql",
                json={"query": "{ viewer { id } }"},
                auth=("api", key) if key else None,
                timeout=(timeout_s, timeout_s),
                allow_redirects=False,
            )
        except Exception as error:  # noqa: BLE001 - any failure to get an answer means "unreachable"
            outcome.append(f"W&B unreachable ({where}: {describe_error(error, timeout_s)})")
            return
        if answer.status_code >= 500:
            outcome.append(f"W&B unreachable ({where}: HTTP {answer.status_code})")
        elif answer.status_code in (401, 403) and check_key:
            outcome.append(f"W&B rejected the API key ({where}: HTTP {answer.status_code})")
        else:
            outcome.append(None)

    thread = threading.Thread(target=ask, name="wandb-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return outcome[0] if outcome else f"W&B unreachable ({where}: timed out after {timeout_s:g} s)"


def _causes(error: BaseException | None):
    """The error and what caused it, outermost first (requests wraps urllib3 wraps the OSError)."""
    seen: set[int] = set()
    while isinstance(error, BaseException) and id(error) not in seen:
        seen.add(id(error))
        yield error
        inner = getattr(error, "reason", None)  # urllib3's MaxRetryError keeps its cause here
        if not isinstance(inner, BaseException):
            inner = error.__cause__ or error.__context__
        if inner is None and error.args and isinstance(error.args[0], BaseException):
            inner = error.args[0]
        error = inner


def describe_error(error: BaseException, timeout_s: float) -> str:
    """A few words for why a request got no answer."""
    chain = list(_causes(error))
    names = " ".join(type(e).__name__ for e in chain)
    text = " ".join(str(e) for e in chain)
    if "NameResolution" in names or "gaierror" in names or "Failed to resolve" in text:
        return "name not resolved"
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "Connection refused" in text:
        return "connection refused"
    if "Timeout" in names or any(isinstance(e, TimeoutError) for e in chain) or "timed out" in text:
        return f"timed out after {timeout_s:g} s"
    if "ProxyError" in names:
        return "proxy failed"
    if "SSL" in names:
        return "TLS failed" + (": certificate verify failed" if "CERTIFICATE_VERIFY_FAILED" in text else "")
    if "Network is unreachable" in text:
        return "network unreachable"
    return type(chain[-1]).__name__

"""W&B with a key and no network: "online" is proven within a few seconds, else offline with one
warning; ``doctor`` says the same. Real sockets: a closed port (refused), a listener whose accept
queue is full (SYNs dropped: the connect hangs, like a firewalled route), a listener that never
answers, and a tiny HTTP server standing in for W&B's ``/graphql`` (it accepts one key)."""

from __future__ import annotations

import base64
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import run_cli, write_grid

from cifar_hpc.submit.doctor import check_wandb
from cifar_hpc.training.wandb_mode import PROBE_TIMEOUT_S, resolve_wandb

KEY = "0123456789abcdef0123456789abcdef0badc0de"  # shaped like a W&B key; never a real one


@pytest.fixture(autouse=True)
def no_wandb_settings(monkeypatch, tmp_path):
    """conftest forces WANDB_MODE=offline; these tests decide the mode themselves. HOME is empty:
    no ~/.netrc but the one a test writes."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    for name in ("WANDB_BASE_URL", "WANDB_IDENTITY_TOKEN_FILE", "NETRC", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()


@pytest.fixture
def refused_url() -> str:
    """A loopback port nobody listens on: the connection is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def blackhole_url():
    """A port whose accept queue is full: the kernel drops new SYNs, so a connect hangs until its
    timeout, as on a compute node whose firewall drops traffic to the internet."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    for s in (*fillers, server):
        s.close()


@pytest.fixture
def silent_url():
    """Accepts the connection, never answers the request."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.fixture
def wandb_server():
    """``POST /graphql`` answers 200 with the key KEY (HTTP basic auth, user "api"), else 401."""
    expected = "Basic " + base64.b64encode(f"api:{KEY}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            ok = self.path == "/graphql" and self.headers.get("Authorization") == expected
            body = b'{"data": {"viewer": {"id": "u1"}}}' if ok else b'{"errors": ["unauthorized"]}'
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def timed(mode: str, **kwargs):
    started = time.monotonic()
    choice = resolve_wandb(mode, **kwargs)
    return choice, time.monotonic() - started


# --- the resolver ---------------------------------------------------------------------------------


def test_auto_without_a_key_is_offline_at_once_and_quietly(monkeypatch, blackhole_url):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", blackhole_url)  # would hang if it were probed
    choice, seconds = timed("auto")
    assert choice.offline and choice.warning is None and "no W&B API key" in choice.reason
    assert seconds < 0.5


@pytest.mark.parametrize(("mode", "env_mode"), [("offline", None), ("disabled", None), ("auto", "offline")])
def test_offline_by_choice_probes_nothing(monkeypatch, blackhole_url, mode, env_mode):
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", blackhole_url)
    if env_mode:
        monkeypatch.setenv("WANDB_MODE", env_mode)
    choice, seconds = timed(mode)
    assert choice.offline and choice.warning is None and seconds < 0.5


@pytest.mark.parametrize("mode", ["auto", "online"])
def test_key_and_refused_connection_fall_back_to_offline_at_once(monkeypatch, refused_url, mode):
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", refused_url)
    choice, seconds = timed(mode)
    port = refused_url.rsplit(":", 1)[1]
    assert choice.offline and choice.reason == f"W&B unreachable (127.0.0.1:{port}: connection refused)"
    assert choice.warning.startswith(choice.reason + "; logging offline") and "wandb sync" in choice.warning
    assert KEY not in choice.warning and seconds < 1.5


def test_key_and_dropped_packets_fall_back_within_the_probe_timeout(monkeypatch, blackhole_url):
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", blackhole_url)
    choice, seconds = timed("auto")
    assert choice.offline and choice.reason.endswith(f": timed out after {PROBE_TIMEOUT_S:g} s)")
    assert PROBE_TIMEOUT_S - 0.5 < seconds < PROBE_TIMEOUT_S + 1


def test_a_server_that_never_answers_is_bounded_too(monkeypatch, silent_url):
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", silent_url)
    choice, seconds = timed("online", timeout_s=1.0)
    assert choice.offline and "timed out after 1 s" in choice.warning and seconds < 2


def test_online_without_a_key_is_offline_with_a_warning_not_a_traceback(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    choice, seconds = timed("online")
    assert choice.offline and choice.warning.startswith("mode online but no W&B API key")
    assert "`wandb login`" in choice.warning and seconds < 0.5


def test_reachable_server_and_accepted_key_is_online(monkeypatch, wandb_server):
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", wandb_server)
    choice, _ = timed("auto")
    assert not choice.offline and choice.mode == "online" and choice.warning is None
    assert choice.reason == "127.0.0.1 reachable" and choice.key_source == "WANDB_API_KEY"


def test_a_rejected_key_is_offline_with_a_warning(monkeypatch, wandb_server):
    monkeypatch.setenv("WANDB_API_KEY", "f" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", wandb_server)
    choice, _ = timed("online")
    assert choice.offline and choice.warning.startswith("W&B rejected the API key (127.0.0.1:")
    assert "f" * 40 not in choice.warning


def test_the_key_in_netrc_counts_as_wandb_login_writes_it(monkeypatch, tmp_path, wandb_server):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", wandb_server)
    netrc = tmp_path / "home" / ".netrc"
    netrc.write_text(f"machine {wandb_server.split('//')[1]}\n  login user\n  password {KEY}\n")
    netrc.chmod(0o600)
    choice, _ = timed("auto")
    assert not choice.offline and choice.key_source == str(netrc)


def test_an_offline_wandb_run_with_a_key_and_no_network_finishes_fast(monkeypatch, tmp_path, refused_url):
    """The whole path training takes: the choice, then wandb itself in that mode, with the key in
    the environment and no route: the run is written offline in seconds instead of ~90 s and a CommError."""
    import wandb

    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", refused_url)
    started = time.monotonic()
    choice = resolve_wandb("auto")
    run = wandb.init(project="p", id="fallback1", dir=str(tmp_path), mode=choice.mode)
    run.log({"loss": 1.0})
    run.finish()
    wandb.teardown()  # wandb's process-wide singleton keeps this test's settings (URL, key) otherwise
    assert choice.offline and time.monotonic() - started < 30
    assert list(tmp_path.glob("wandb/offline-run-*-fallback1/run-fallback1.wandb"))


# --- doctor ---------------------------------------------------------------------------------------


def _wandb_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line[6:].startswith("wandb")]


def test_doctor_says_what_training_will_do(monkeypatch, tmp_path, capsys, refused_url, wandb_server):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    (line,) = _wandb_lines(run_cli(["doctor", "--executor", "local"], capsys).out)
    assert line.startswith("OK") and "offline: no W&B API key" in line

    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", refused_url)
    done = run_cli(["doctor", "--executor", "local"], capsys)
    (line,) = _wandb_lines(done.out)
    assert line.startswith("WARN") and "offline: W&B unreachable (127.0.0.1:" in line and "connection refused" in line
    assert done.code == 0 and KEY not in done.out + done.err

    monkeypatch.setenv("WANDB_BASE_URL", wandb_server)
    done = run_cli(["doctor", "--executor", "local"], capsys)
    (line,) = _wandb_lines(done.out)
    assert line.startswith("OK") and "online (127.0.0.1 reachable from this machine" in line
    assert KEY not in done.out + done.err


def test_doctor_warns_when_a_grid_asks_for_online_without_a_key(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    grid = write_grid(tmp_path, "online", '[[cells]]\nname = "baseline"\nset = { wandb = { mode = "online" } }\n')
    done = run_cli(["doctor", "--grid", grid, "--executor", "local"], capsys)
    (line,) = _wandb_lines(done.out)
    assert line.startswith("WARN") and "offline: no W&B API key" in line and done.code == 0, done.out


def test_doctor_warns_that_slurm_jobs_need_the_key_in_netrc(monkeypatch, tmp_path, wandb_server):
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    monkeypatch.setenv("WANDB_BASE_URL", wandb_server)
    check = check_wandb("auto", executor="slurm")
    assert check.status == "warn" and "jobs do not get WANDB_API_KEY" in check.detail and "wandb login" in check.detail
    netrc = tmp_path / "home" / ".netrc"
    netrc.write_text(f"machine {wandb_server.split('//')[1]} login user password {KEY}\n")
    check = check_wandb("auto", executor="slurm")
    assert check.status == "ok" and check.detail.startswith("online (") and KEY not in check.detail

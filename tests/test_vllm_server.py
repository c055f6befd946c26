"""The OpenAI-compatible vLLM server with the plugin loaded by its entry point (no flag): a
real server on 127.0.0.1, started and stopped by the test, every wait bounded."""

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("vllm")
openai = pytest.importorskip("openai")

STARTUP_SECONDS = 240


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tiny_llama import build_tiny_llama

    folder = build_tiny_llama(tmp_path_factory.mktemp("tiny-server"))
    port = free_port()
    log_path = tmp_path_factory.mktemp("server-log") / "server.log"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
           "OMP_NUM_THREADS": "1", "VLLM_CACHE_ROOT": str(tmp_path_factory.mktemp("vcache"))}
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
               "--host", "127.0.0.1", "--port", str(port), "--enforce-eager", "--dtype",
               "float32", "--max-model-len", "128", "--served-model-name", "tiny"]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail("server exited:\n" + log_path.read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("server not ready in time:\n" + log_path.read_text()[-3000:])
                time.sleep(1)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none",
                               timeout=60, max_retries=0)
        yield client, log_path
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def complete(client, xargs=None, **kwargs):
    extra = {"vllm_xargs": xargs} if xargs else None
    return client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=8,
                                     temperature=1.0, extra_body=extra, **kwargs)


def test_entry_point_loads_the_plugin_without_a_flag(server):
    _, log_path = server
    assert "qsample logits processor loaded" in log_path.read_text()


def test_completions_opt_in_per_request_and_are_reproducible(server):
    client, _ = server
    xargs = {"qsample_mode": "gumbel", "qsample_seed": 21, "qsample_top_k": 16}
    first = complete(client, xargs).choices[0].text
    second = complete(client, xargs).choices[0].text
    assert first == second and first  # the annealer's seed decides the text
    other = complete(client, {**xargs, "qsample_seed": 22}).choices[0].text
    assert other != first


def test_chat_completions_opt_in(server):
    client, _ = server
    answers = [client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Tell me a story"}], max_tokens=6,
        extra_body={"vllm_xargs": {"qsample": 1, "qsample_seed": 5}}).choices[0].message.content
        for _ in range(2)]
    assert answers[0] == answers[1]


def test_bad_values_get_http_400_naming_the_key(server):
    client, _ = server
    with pytest.raises(openai.BadRequestError, match="qsample_top_k=0"):
        complete(client, {"qsample_top_k": 0})
    with pytest.raises(openai.BadRequestError, match="not allowed on this server"):
        complete(client, {"qsample_backend": "exact"})
    assert complete(client).choices[0].text is not None  # the server is still serving

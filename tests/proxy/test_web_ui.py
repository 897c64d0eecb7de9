"""The built-in web page in a real browser: Debian's Chromium driven by Playwright, against a real
proxy and the Ollama simulator. Screenshots land in test-output/screenshots/."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from tests.proxy.conftest import REPO_ROOT
from tests.support.proxy_process import ProxyProcess, sim_stats
from tests.support.timing import scaled, scaled_ms, wait_until
from tests.support.tokens import admin_auth, make_token

SCREENSHOTS = Path(os.environ.get("TEST_OUTPUT_DIR", REPO_ROOT / "test-output")) / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium "
                    "(scripts/browser-tools does it)")
    # Every Playwright wait (actions and `expect`) gets the suite's scaled budget.
    expect.set_options(timeout=scaled_ms(5))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS,
                                             timeout=scaled_ms(30))
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def web_proxy(proxy_factory, simulator) -> ProxyProcess:
    return proxy_factory(OLLAMA_URL=simulator.url)


@pytest.fixture
def slow_sim(sim) -> Iterator[object]:
    sim.configure(tokens_per_second=8, first_token_delay=0.2)
    yield sim


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(scaled_ms(30))
    page = context.new_page()
    yield page
    context.close()


def sign_in(page: Page, proxy: ProxyProcess, user: str, role: str = "user") -> None:
    page.goto(proxy.url + "/")
    page.fill("#token-input", make_token(user, role, ttl=3600))
    page.click("#signin-button")
    expect(page.locator("#chat-view")).to_be_visible()
    expect(page.locator("#model-select option").first).to_be_attached()


def ask(page: Page, text: str) -> None:
    page.fill("#prompt", text)
    page.click("#send")


def last_answer(page: Page):  # noqa: ANN201 - a Playwright Locator
    return page.locator(".message.assistant").last


def test_sign_in_and_the_reply_streams_in_incrementally(page: Page, web_proxy: ProxyProcess,
                                                       slow_sim) -> None:
    sign_in(page, web_proxy, "ada")
    expect(page.locator("#tab-admin")).to_be_hidden()
    ask(page, "Tell me about the sea")
    answer = last_answer(page)
    lengths: list[int] = []
    deadline = time.monotonic() + scaled(30)
    while answer.get_attribute("data-state") != "done":
        assert time.monotonic() < deadline, "the reply never finished"
        lengths.append(len(answer.inner_text()))
        time.sleep(0.1)
    final = len(answer.inner_text())
    growing = sorted({n for n in lengths if 0 < n < final})
    # Tokens arrived over time: several partial lengths were seen before the end.
    assert len(growing) >= 3, lengths
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "chat.png"), full_page=True)


def test_stop_ends_a_stream(page: Page, web_proxy: ProxyProcess, slow_sim) -> None:
    sign_in(page, web_proxy, "bo")
    ask(page, "A long answer please")
    answer = last_answer(page)
    expect(answer).not_to_have_text("", timeout=scaled_ms(10))
    page.click("#stop")
    expect(answer).to_have_attribute("data-state", "stopped", timeout=scaled_ms(10))
    expect(page.locator("#send")).to_be_visible()
    # An upstream generation that is not cancelled fails this wait.
    wait_until(lambda: sim_stats(slow_sim)["cancelled"] >= 1)


def test_reload_and_continue_a_conversation(page: Page, web_proxy: ProxyProcess, sim) -> None:
    sign_in(page, web_proxy, "cy")
    ask(page, "Remember the number seven")
    expect(last_answer(page)).to_have_attribute("data-state", "done", timeout=scaled_ms(15))
    first_reply = last_answer(page).inner_text()
    page.reload()
    # Still signed in (the token is kept for this tab), and the conversation is listed.
    conversation = page.locator("#conversations li .open").first
    expect(conversation).to_have_text("Remember the number seven")
    conversation.click()
    expect(page.locator(".message")).to_have_count(2)
    ask(page, "Which number?")
    expect(last_answer(page)).to_have_attribute("data-state", "done", timeout=scaled_ms(15))
    sent = sim_stats(sim)["last_body"]["/api/chat"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[0]["content"] == "Remember the number seven"
    assert sent[1]["content"].strip() == first_reply.strip()
    # Delete it from the list.
    page.locator("#conversations li .delete").first.click()
    expect(page.locator("#conversations li")).to_have_count(0)


def test_rate_limit_message_says_how_long_to_wait(page: Page, proxy_factory, simulator,
                                                  sim) -> None:
    proxy = proxy_factory(OLLAMA_URL=simulator.url, PROXY_RATE_LIMIT="2/minute")
    sign_in(page, proxy, "dee")
    for text in ("one", "two"):
        ask(page, text)
        expect(last_answer(page)).to_have_attribute("data-state", "done", timeout=scaled_ms(15))
    ask(page, "three")
    notice = page.locator("#notice")
    expect(notice).to_be_visible(timeout=scaled_ms(10))
    expect(notice).to_contain_text("Rate limit reached")
    expect(notice).to_contain_text("Try again in")


def test_bad_token_is_refused_with_a_message(page: Page, web_proxy: ProxyProcess) -> None:
    page.goto(web_proxy.url + "/")
    page.fill("#token-input", make_token("eve", ttl=-600))
    page.click("#signin-button")
    expect(page.locator("#notice")).to_contain_text("token was not accepted")
    expect(page.locator("#signin-view")).to_be_visible()


def test_upstream_down_is_explained(page: Page, proxy_factory) -> None:
    from tests.support.proxy_process import free_port

    proxy = proxy_factory(OLLAMA_URL=f"http://127.0.0.1:{free_port()}")
    page.goto(proxy.url + "/")
    page.fill("#token-input", make_token("fay", ttl=3600))
    page.click("#signin-button")
    expect(page.locator("#notice")).to_contain_text("model server is unavailable")


def test_admin_pulls_a_model_and_sees_progress_reach_100(page: Page, web_proxy: ProxyProcess,
                                                         sim) -> None:
    sim.configure(pull_duration=scaled(1.5))  # long enough to see progress between 0 and 100
    sign_in(page, web_proxy, "root", "admin")
    ask(page, "hello admin")
    expect(last_answer(page)).to_have_attribute("data-state", "done", timeout=scaled_ms(15))
    page.click("#tab-admin")
    expect(page.locator("#admin-view")).to_be_visible()
    page.fill("#pull-name", "gemma3:270m")
    page.click("#pull-button")
    progress = page.locator("#pull-progress")
    seen: set[str] = set()
    deadline = time.monotonic() + scaled(30)
    while (value := progress.get_attribute("value")) != "100":
        assert time.monotonic() < deadline, f"progress stuck at {value}"
        seen.add(value or "")
        time.sleep(0.05)
    assert len(seen - {"0", ""}) >= 1, "no intermediate progress was shown"
    expect(page.locator("#pull-status")).to_contain_text("success")
    expect(page.locator("#models-table")).to_contain_text("gemma3:270m")
    expect(page.locator("#usage-table tbody")).to_contain_text("root")
    expect(page.locator("#audit-table tbody tr").first).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "admin.png"), full_page=True)


def test_non_admin_sees_no_admin_tab_and_gets_403(page: Page, web_proxy: ProxyProcess) -> None:
    sign_in(page, web_proxy, "gus")
    expect(page.locator("#tab-admin")).to_be_hidden()
    status = page.evaluate(
        """async (token) => (await fetch('/api/admin/usage',
               {headers: {Authorization: 'Bearer ' + token}})).status""",
        make_token("gus", ttl=3600))
    assert status == 403


@pytest.mark.parametrize("role", ["user", "admin"])
def test_an_api_key_signs_in_as_its_owner(page: Page, web_proxy: ProxyProcess, sim,
                                          role: str) -> None:
    with web_proxy.client() as client:
        made = client.post("/api/admin/keys", headers=admin_auth(),
                           json={"name": "web", "owner": f"keyed-{role}", "role": role})
        assert made.status_code == 201, made.text
    page.goto(web_proxy.url + "/")
    page.fill("#token-input", made.json()["secret"])
    page.click("#signin-button")
    expect(page.locator("#chat-view")).to_be_visible()
    expect(page.locator("#who")).to_have_text(f"keyed-{role} ({role})")
    if role == "admin":
        expect(page.locator("#tab-admin")).to_be_visible()
    else:
        expect(page.locator("#tab-admin")).to_be_hidden()
    ask(page, "hello")
    expect(last_answer(page)).to_have_attribute("data-state", "done")


def test_model_output_cannot_inject_html(page: Page, web_proxy: ProxyProcess) -> None:
    page.goto(web_proxy.url + "/")
    created = page.evaluate("""() => {
        const hostile = '<img src=x onerror="window.pwned=1"> **bold** `<b>x</b>`\\n' +
                        '```\\n<script>window.pwned=2</script>\\n```\\n[x](javascript:alert(1))';
        const holder = document.createElement('div');
        holder.appendChild(window.renderMarkdown(hostile));
        return {img: holder.querySelectorAll('img, script, b').length,
                strong: holder.querySelectorAll('strong').length,
                links: holder.querySelectorAll('a').length,
                text: holder.textContent, pwned: window.pwned || 0};
    }""")
    assert created["img"] == 0
    assert created["strong"] == 1
    assert created["links"] == 0
    assert "<img src=x" in created["text"]
    assert created["pwned"] == 0


def test_works_on_a_phone_sized_screen(browser: Browser, web_proxy: ProxyProcess, sim) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True,
                                  has_touch=True)
    context.set_default_timeout(scaled_ms(30))
    page = context.new_page()
    try:
        sign_in(page, web_proxy, "hal")
        ask(page, "small screen")
        expect(last_answer(page)).to_have_attribute("data-state", "done", timeout=scaled_ms(15))
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"the page scrolls sideways ({width}px)"
        assert page.locator("#send").is_visible() or page.locator("#stop").is_visible()
        page.screenshot(path=str(SCREENSHOTS / "chat-phone.png"), full_page=True)
    finally:
        context.close()


@pytest.fixture
def offline_page(browser: Browser) -> Iterator[tuple[Page, list[str], list[str]]]:
    """A page whose every request for anything but the proxy on 127.0.0.1 is aborted (as on an
    air-gapped host), with the URLs it tried to reach elsewhere and the console's errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(scaled_ms(30))
    elsewhere: list[str] = []
    errors: list[str] = []

    def only_the_proxy(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort("internetdisconnected")

    context.route("**/*", only_the_proxy)
    page = context.new_page()
    page.on("console", lambda message: errors.append(message.text)
            if message.type == "error" else None)
    yield page, elsewhere, errors
    context.close()


def test_the_api_documentation_works_without_internet(
        offline_page: tuple[Page, list[str], list[str]], web_proxy: ProxyProcess) -> None:
    page, elsewhere, errors = offline_page
    page.goto(web_proxy.url + "/docs")
    # Swagger UI has drawn the operations from /openapi.json.
    expect(page.locator(".opblock-summary-path").filter(has_text="/api/llm/generate")
           ).to_be_visible()
    assert page.locator(".opblock").count() >= 10
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "docs-offline.png"))

    page.goto(web_proxy.url + "/redoc")
    # ReDoc has drawn its menu and the operations.
    expect(page.locator("h2", has_text="Generate").first).to_be_visible()
    expect(page.locator("[role=menuitem]").first).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "redoc-offline.png"))

    assert elsewhere == [], f"the documentation reached out of the host: {elsewhere}"
    # ReDoc's "API docs by Redocly" footer asks for its logo from Redocly's CDN; the page's
    # policy stops it before any request is made. Nothing else may be refused.
    refused = [e for e in errors if "Content Security Policy" in e]
    assert all("https://cdn.redoc.ly/redoc/logo-mini.svg" in e for e in refused), refused

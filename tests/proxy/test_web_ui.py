"""The built-in web page in a real browser: Debian's Chromium driven by Playwright, against a real
proxy and the Ollama simulator. Screenshots land in test-output/screenshots/."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Dialog, Page, Route, expect, sync_playwright

from tests.proxy.conftest import REPO_ROOT
from tests.support.proxy_process import ProxyProcess, sim_stats
from tests.support.timing import scaled, scaled_ms, wait_until
from tests.support.tokens import admin_auth, auth, make_token

SCREENSHOTS = Path(os.environ.get("TEST_OUTPUT_DIR", REPO_ROOT / "test-output")) / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
PHONE_WIDTH = 375
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


@pytest.fixture
def phone(browser: Browser) -> Iterator[Page]:
    """A page on a phone-sized touch screen."""
    context = browser.new_context(viewport={"width": PHONE_WIDTH, "height": 740},
                                  is_mobile=True, has_touch=True)
    context.set_default_timeout(scaled_ms(30))
    yield context.new_page()
    context.close()


def assert_no_sideways_scroll(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE_WIDTH, f"the page scrolls sideways ({width}px)"


def test_works_on_a_phone_sized_screen(phone: Page, web_proxy: ProxyProcess, sim) -> None:
    sign_in(phone, web_proxy, "hal")
    ask(phone, "small screen")
    expect(last_answer(phone)).to_have_attribute("data-state", "done", timeout=scaled_ms(15))
    assert_no_sideways_scroll(phone)
    assert phone.locator("#send").is_visible() or phone.locator("#stop").is_visible()
    phone.screenshot(path=str(SCREENSHOTS / "chat-phone.png"), full_page=True)


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
    # ReDoc has drawn its menu and the operations: it parses the whole schema in the page first,
    # seconds of CPU on a busy machine.
    expect(page.locator("h2", has_text="Generate").first).to_be_visible(timeout=scaled_ms(30))
    expect(page.locator("[role=menuitem]").first).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "redoc-offline.png"))

    assert elsewhere == [], f"the documentation reached out of the host: {elsewhere}"
    # ReDoc's "API docs by Redocly" footer asks for its logo from Redocly's CDN; the page's
    # policy stops it before any request is made. Nothing else may be refused.
    refused = [e for e in errors if "Content Security Policy" in e]
    assert all("https://cdn.redoc.ly/redoc/logo-mini.svg" in e for e in refused), refused


# -- the admin tab's API keys and budgets, on the real Postgres and Redis ----------------------

REDIS = "redis://127.0.0.1:6379/0"
# Tokens priced at 1 each, so that a request's cost is its token count.
PRICED = {"PROXY_COST_MODE": "tokens",
          "PROXY_COST_PER_1K_TOKENS": json.dumps({"*": {"prompt": 1000.0, "completion": 1000.0}})}
REPLY_TOKENS = 10


@pytest.fixture(scope="module")
def admin_proxy(proxy_factory, simulator, postgres_url: str) -> ProxyProcess:
    return proxy_factory(OLLAMA_URL=simulator.url, DATABASE_URL=postgres_url, REDIS_URL=REDIS,
                         **PRICED)


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def models_status(proxy: ProxyProcess, secret: str) -> int:
    return httpx.get(proxy.url + "/v1/models", headers=bearer(secret),
                     timeout=scaled(10)).status_code


def open_admin(page: Page, proxy: ProxyProcess, card: str) -> None:
    sign_in(page, proxy, "root", "admin")
    page.click("#tab-admin")
    page.click(f".sections a[href='#{card}']")
    expect(page.locator(f"#{card}")).to_be_in_viewport()


def shown_secret(page: Page) -> str:
    expect(page.locator("#key-secret")).to_be_visible()
    expect(page.locator("#key-secret")).to_contain_text("you will not see it again")
    secret = page.input_value("#key-secret-value")
    assert secret.startswith("sk-llm-"), secret
    return secret


def key_row(page: Page, name: str):  # noqa: ANN201 - a Playwright Locator
    return page.locator("#keys-table tbody tr").filter(
        has=page.locator("td:first-child", has_text=name))


@pytest.mark.postgres
def test_admin_creates_rotates_and_revokes_a_key_in_the_page(page: Page, admin_proxy: ProxyProcess,
                                                             sim) -> None:
    confirms: list[str] = []

    def accept(dialog: Dialog) -> None:
        confirms.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=admin_proxy.url)
    owner, name = fresh("kim"), fresh("batch")
    open_admin(page, admin_proxy, "keys-card")
    page.fill("#key-owner", owner)
    page.fill("#key-name", name)
    page.fill("#key-expires", "2099-01-01T12:00")
    page.fill("#key-models", "llama3.2")
    page.fill("#key-rate", "30")
    page.fill("#key-concurrency", "2")
    page.fill("#key-tokens-minute", "5000")
    page.fill("#key-tokens-day", "100000")
    page.click("#key-create")
    secret = shown_secret(page)
    expect(page.locator("#key-secret-title")).to_have_text(
        f"New key \u201c{name}\u201d of {owner}")
    page.click("#key-secret-copy")
    expect(page.locator("#key-secret-copied")).to_have_text("Copied.")
    assert page.evaluate("navigator.clipboard.readText()") == secret

    # The secret works, within what the form asked for.
    assert models_status(admin_proxy, secret) == 200
    other_model = httpx.post(admin_proxy.url + "/api/llm/generate", headers=bearer(secret),
                             json={"model": "mistral", "prompt": "hi", "stream": False},
                             timeout=scaled(10))
    assert other_model.status_code == 403
    assert "not allowed for this API key" in other_model.json()["error"]
    row = key_row(page, name)
    expect(row).to_have_count(1)
    cells = row.locator("td")
    expect(cells.nth(1)).to_have_text(owner)
    assert secret.startswith(cells.nth(2).inner_text().rstrip("…"))
    expect(cells.nth(4)).to_contain_text("2099")
    expect(cells.nth(5)).to_have_text("never")  # last used: updated at most once a minute
    expect(cells.nth(6)).to_have_text("no")
    expect(cells.nth(7)).to_have_text(
        "30 requests/min, 2 at once, 5000 tokens/min, 100000 tokens/day")
    expect(cells.nth(8)).to_have_text("llama3.2")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("#keys-card").screenshot(path=str(SCREENSHOTS / "admin-keys.png"))
    page.click("#key-secret-done")
    expect(page.locator("#key-secret")).to_be_hidden()
    assert page.input_value("#key-secret-value") == ""  # kept nowhere in the page

    row.locator("button.rotate").click()
    rotated = shown_secret(page)
    assert rotated != secret
    expect(page.locator("#key-secret-title")).to_have_text(
        f"New secret for key \u201c{name}\u201d of {owner}")
    assert "stops working at once" in confirms[-1]
    assert models_status(admin_proxy, secret) == 401
    assert models_status(admin_proxy, rotated) == 200

    row.locator("button.revoke").click()
    assert "cannot be undone" in confirms[-1]
    expect(row).to_have_count(0)  # revoked keys are listed only when asked for
    assert models_status(admin_proxy, rotated) == 401
    page.check("#keys-show-revoked")
    expect(key_row(page, name).locator("td").nth(6)).not_to_have_text("no")
    expect(key_row(page, name).locator("button")).to_have_count(0)
    assert len(confirms) == 2


@pytest.mark.postgres
def test_a_key_the_api_refuses_is_explained_and_nothing_is_made(page: Page,
                                                                 admin_proxy: ProxyProcess) -> None:
    name = fresh("late")
    open_admin(page, admin_proxy, "keys-card")
    page.fill("#key-name", name)
    page.fill("#key-expires", "2001-01-01T00:00")
    page.click("#key-create")
    error = page.locator("#keys-error")
    expect(error).to_be_visible()
    expect(error).to_have_text("The key was not created. expires_at must be in the future")
    expect(page.locator("#key-secret")).to_be_hidden()
    with admin_proxy.client() as client:
        keys = client.get("/api/admin/keys", headers=admin_auth(),
                          params={"include_revoked": "true"}).json()["keys"]
    assert name not in {key["name"] for key in keys}
    # The form keeps what was typed, to be corrected.
    assert page.input_value("#key-name") == name


def test_an_admin_signed_in_with_an_api_key_is_told_to_manage_keys_with_a_token(
        page: Page, web_proxy: ProxyProcess) -> None:
    with web_proxy.client() as client:
        made = client.post("/api/admin/keys", headers=admin_auth(),
                           json={"name": "console", "owner": fresh("keyed"), "role": "admin"})
        assert made.status_code == 201, made.text
    page.goto(web_proxy.url + "/")
    page.fill("#token-input", made.json()["secret"])
    page.click("#signin-button")
    page.click("#tab-admin")
    expect(page.locator("#keys-error")).to_have_text(
        "Not allowed: API keys are managed with a signed-in token (JWT), not with an API key")
    expect(page.locator("#keys-table tbody tr")).to_have_count(0)
    # Budgets are not keys: that view still works.
    expect(page.locator("#budgets-note")).to_contain_text("Amounts in USD")


def team_with_member(proxy: ProxyProcess) -> tuple[str, str]:
    team, member = fresh("team"), fresh("member")
    with proxy.client(headers=admin_auth()) as client:
        made = client.post("/api/admin/teams", json={"name": team, "description": "research"})
        assert made.status_code == 201, made.text
        joined = client.post(f"/api/admin/teams/{team}/members", json={"user": member})
        assert joined.status_code == 200, joined.text
    return team, member


def generate(proxy: ProxyProcess, user: str) -> httpx.Response:
    return httpx.post(proxy.url + "/api/llm/generate", headers=auth(user),
                      json={"model": "llama3.2", "prompt": "hi", "stream": False},
                      timeout=scaled(30))


def budget_item(page: Page, scope: str, subject: str):  # noqa: ANN201 - a Playwright Locator
    return page.locator(f"#budgets-list li[data-scope='{scope}'][data-subject='{subject}']")


@pytest.mark.postgres
def test_the_budgets_view_shows_a_teams_spend_after_a_request(page: Page,
                                                              admin_proxy: ProxyProcess,
                                                              sim) -> None:
    sim.configure(reply_tokens=REPLY_TOKENS)
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text)
            if message.type == "error" else None)
    team, member = team_with_member(admin_proxy)
    with admin_proxy.client(headers=admin_auth()) as client:
        capped = client.put(f"/api/admin/budgets/user/{member}/day", json={"amount": 10})
        assert capped.status_code == 200, capped.text
    open_admin(page, admin_proxy, "budgets-card")
    expect(page.locator(f"#teams-table tr[data-team='{team}']")).to_contain_text(member)
    # Set the team's budget in the page.
    page.select_option("#budget-scope", "team")
    page.fill("#budget-subject", team)
    page.select_option("#budget-period", "day")
    page.fill("#budget-amount", "12")
    page.fill("#budget-soft", "6")
    page.click("#budget-set")
    item = budget_item(page, "team", team)
    expect(item.locator(".spent")).to_have_text("0")
    expect(item.locator(".amount")).to_have_text("12")

    answer = generate(admin_proxy, member)
    assert answer.status_code == 200, answer.text
    cost = answer.json()["usage"]["total_tokens"]
    assert cost == 1 + REPLY_TOKENS  # "hi" is one token

    def shown_spend() -> str:
        page.click("#budgets-refresh")
        return item.locator(".spent").inner_text()

    wait_until(lambda: shown_spend() == "11")
    expect(item.locator(".amount")).to_have_text("12")
    expect(item.locator(".soft")).to_have_text("6")
    expect(item.locator(".percent")).to_have_text("92%")
    expect(item).to_have_class("budget near")
    expect(item.locator(".budget-level")).to_have_text("near the limit")
    assert item.locator(".fill").evaluate("e => e.style.width") == "91.7%"
    assert item.locator(".soft-mark").evaluate("e => e.style.left") == "50%"
    expect(item.locator(".bar")).to_have_attribute("aria-valuenow", "11")
    # The member's own budget of 10 is spent: marked, and the next request is refused.
    mine = budget_item(page, "user", member)
    expect(mine).to_have_class("budget over")
    expect(mine.locator(".spent")).to_have_text("11")
    expect(mine.locator(".budget-level")).to_have_text("spent: requests are refused")
    assert generate(admin_proxy, member).status_code == 429
    expect(page.locator("#budgets-note")).to_have_text(
        "Amounts in USD, priced by tokens (PROXY_COST_MODE).")
    # The bars are drawn through the CSSOM, which the page's style-src 'self' allows.
    assert [e for e in errors if "Content Security Policy" in e] == []
    page.locator("#budgets-card").screenshot(path=str(SCREENSHOTS / "admin-budgets.png"))


@pytest.mark.postgres
def test_a_budget_the_api_refuses_is_explained(page: Page, admin_proxy: ProxyProcess) -> None:
    open_admin(page, admin_proxy, "budgets-card")
    page.select_option("#budget-scope", "team")
    page.fill("#budget-subject", "no-such-team")
    page.fill("#budget-amount", "5")
    page.click("#budget-set")
    expect(page.locator("#budgets-error")).to_have_text(
        "The budget was not set. team 'no-such-team' not found")
    expect(budget_item(page, "team", "no-such-team")).to_have_count(0)


@pytest.mark.postgres
def test_keys_and_budgets_work_on_a_phone_sized_screen(phone: Page,
                                                      admin_proxy: ProxyProcess) -> None:
    team, _ = team_with_member(admin_proxy)
    with admin_proxy.client(headers=admin_auth()) as client:
        assert client.put(f"/api/admin/budgets/team/{team}/month",
                          json={"amount": 200, "soft_limit": 150}).status_code == 200
    open_admin(phone, admin_proxy, "keys-card")
    phone.fill("#key-name", fresh("phone"))
    phone.fill("#key-tokens-minute", "1000")
    phone.click("#key-create")
    shown_secret(phone)
    expect(budget_item(phone, "team", team)).to_be_attached()
    assert_no_sideways_scroll(phone)
    # Wide tables scroll inside their card; nothing else spills out of one.
    spilling = phone.evaluate("""() => [...document.querySelectorAll('#admin-view .card')]
        .filter((card) => card.scrollWidth > card.clientWidth).map((card) => card.id)""")
    assert spilling == []
    assert phone.locator("#key-secret-copy").is_visible()
    phone.locator("#keys-card").screenshot(path=str(SCREENSHOTS / "admin-keys-phone.png"))
    phone.locator("#budgets-card").screenshot(path=str(SCREENSHOTS / "admin-budgets-phone.png"))

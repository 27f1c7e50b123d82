"""The dashboard in a real browser: Debian's chromium, headless, driven by selenium.

A 3-node mesh behind nginx, the page opened through the balancer: three alive members; one node
killed with SIGKILL turns suspect and then dead on the page without a reload; restarted, it is
alive again. The page polls /cluster/status once a second, so the test watches the DOM.

A screenshot is saved next to the test's files, and to $KVMESH_SCREENSHOT when that is set (the
README's picture: `KVMESH_SCREENSHOT=docs/dashboard.png pytest tests/e2e/test_dashboard.py`).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loadtest import mesh as meshlib
from loadtest import procs
from tests.e2e.meshes import mesh_of

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(procs.nginx_binary() is None, reason="nginx is not installed"),
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None, reason="chromium or chromium-driver is missing"
    ),
]


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1400,1000")
    # The driver given by path: selenium-manager would try to download one (there is no network).
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def rows(driver: WebDriver, selector: str, *attributes: str) -> list[list[str]]:
    """Each element matching `selector`: the attributes asked for, then its text. Read in one
    script: the page redraws every second, so a handle to an element soon goes stale."""
    script = (
        "return [...document.querySelectorAll(arguments[0])]"
        ".map(e => [...arguments[1].map(a => e.getAttribute(a)), e.innerText])"
    )
    return [[str(x) for x in row] for row in driver.execute_script(script, selector, attributes)]


def states(driver: WebDriver) -> dict[str, str]:
    """The members table as the page shows it: name -> state."""
    return {
        name: state
        for name, state, _ in rows(driver, "#members tr[data-member]", "data-member", "data-state")
    }


def watch(driver: WebDriver, done: Callable[[dict[str, str]], bool], within: float) -> list[str]:
    """Read the page every 0.1 s until `done(states)`; the distinct states node3 went through."""
    seen: list[str] = []
    deadline = time.monotonic() + within
    while True:
        now = states(driver)
        state = now.get("node3", "absent")
        if not seen or seen[-1] != state:
            seen.append(state)
        if done(now):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"the page never got there; node3 went through {seen}, now {now}")
        time.sleep(0.1)


def load(url: str, count: int) -> None:
    """Some client writes through the balancer, so the chart and the figures show something."""
    for i in range(count):
        req = urllib.request.Request(f"{url}/keys/k{i}", data=b'{"value": "v"}', method="PUT")
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status in (200, 201)


def test_the_dashboard_follows_a_node_killed_and_restarted(
    running_mesh: meshlib.Mesh, browser: WebDriver, tmp_path: Path
) -> None:
    url = running_mesh.plan.url
    load(url, 300)
    browser.get(f"{url}/ui")
    watch(browser, lambda s: s == dict.fromkeys(["node1", "node2", "node3"], "alive"), 15)
    assert browser.find_element(By.ID, "served-by").text in {"node1", "node2", "node3"}
    # Every node's row in the nodes table, with the keys each holds.
    nodes = {name: text for name, text in rows(browser, "#nodes tr[data-node]", "data-node")}
    assert sorted(nodes) == ["node1", "node2", "node3"]
    assert all("\t300\t" in text for text in nodes.values()), nodes
    shot = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(shot))
    if os.environ.get("KVMESH_SCREENSHOT"):
        shutil.copy(shot, os.environ["KVMESH_SCREENSHOT"])

    victim = running_mesh.children["node3"].proc
    assert victim is not None
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    seen = watch(browser, lambda s: s.get("node3") == "dead", 60)
    # alive, then suspect (the page may also show the other observer's view in between).
    assert seen[0] == "alive"
    assert "suspect" in seen
    assert seen.index("suspect") < seen.index("dead")
    kinds = [
        kind
        for name, kind, _ in rows(browser, "#events li", "data-name", "data-kind")
        if name == "node3"
    ]
    assert "dead" in kinds

    running_mesh.respawn("node3")
    watch(browser, lambda s: s == dict.fromkeys(["node1", "node2", "node3"], "alive"), 60)


@pytest.fixture
def guarded_mesh(tmp_path: Path) -> Iterator[meshlib.Mesh]:
    """Three nodes with an admin token, behind nginx."""
    with mesh_of(meshlib.free_plan(3, ("--admin-token", "s3cret")), tmp_path) as m:
        yield m


def test_with_an_admin_token_the_page_removes_a_member_only_with_the_token(
    guarded_mesh: meshlib.Mesh, browser: WebDriver
) -> None:
    node1 = guarded_mesh.plan.nodes[0]
    browser.get(f"http://127.0.0.1:{node1.port}/ui")  # node1's own page: it may also leave
    watch(browser, lambda s: s == dict.fromkeys(["node1", "node2", "node3"], "alive"), 15)
    buttons = rows(browser, "#members tr[data-member] button", "title")
    assert len(buttons) == 3  # remove node2, remove node3, and leave on node1's own row

    def click_remove(name: str) -> None:
        browser.execute_script(
            "document.querySelector(`#members tr[data-member='${arguments[0]}'] button`).click()",
            name,
        )

    # A wrong token: refused, nothing changes, and the page asks again next time.
    click_remove("node3")
    alert = browser.switch_to.alert
    alert.send_keys("wrong")
    alert.accept()
    deadline = time.monotonic() + 10
    while "admin token" not in browser.find_element(By.ID, "message").text:
        assert time.monotonic() < deadline, browser.find_element(By.ID, "message").text
        time.sleep(0.1)
    assert states(browser)["node3"] == "alive"

    click_remove("node3")
    alert = browser.switch_to.alert
    alert.send_keys("s3cret")
    alert.accept()
    watch(browser, lambda s: s.get("node3") == "left", 15)


def test_without_an_admin_token_the_page_offers_no_admin_action(
    running_mesh: meshlib.Mesh, browser: WebDriver
) -> None:
    browser.get(f"{running_mesh.plan.url}/ui")
    watch(browser, lambda s: len(s) == 3, 15)
    assert rows(browser, "#members button") == []
    assert "read-only" in browser.find_element(By.ID, "admin").text

"""Headless Chromium (Debian's `chromium` + `chromium-driver`) driven with selenium, and what a
person does in the Prefect UI V2 (the default UI of Prefect 3.9, under /v2): open a paused run's
Resume dialog, read the request, fill in the JSON-schema form, press Resume.

No browser is downloaded: selenium is pointed at /usr/bin/chromedriver and /usr/bin/chromium,
which scripts/bootstrap.sh installs. Waits are explicit (WebDriverWait on elements and text).

The V2 UI's DOM, as of Prefect 3.9.1 (React, Radix UI, shadcn):
- a run page's actions are in a kebab menu, `button[data-slot=dropdown-menu-trigger]` whose
  text is "Open menu" (sr-only); its `[role=menu]` has `[role=menuitem]` "Resume";
- the dialog is `[data-slot=dialog-content]` (role=dialog; careful: a select's popover is a
  role=dialog too): title "Resume Flow Run", the run input's description rendered from Markdown
  in a `div.prose`, then one block per field: `<label for=ID>Name</label>` (" (Optional)"
  appended when the field has a default) and the widget with that id — a `<textarea>` for a
  string, a `button[aria-haspopup=listbox]` ("Select" until chosen) for an enum, which opens a
  cmdk list of `[role=option]`;
- the footer's buttons are "Cancel" and "Resume"; a resumed run shows a toast, "Flow run resumed".
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WINDOW = (1400, 1000)
WAIT = 60.0  # seconds for any page condition: the UI's bundle is large and the machine slow
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")

DIALOG = (By.CSS_SELECTOR, "[data-slot=dialog-content]")


def require_chromium() -> None:
    """Fail (not skip) when the browser is missing: scripts/bootstrap.sh installs it."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not found: the browser test needs Debian's chromium and "
            "chromium-driver; run scripts/bootstrap.sh (apt-get install chromium chromium-driver)"
        )


@contextmanager
def chromium(window: tuple[int, int] = WINDOW) -> Iterator[WebDriver]:
    """A headless Chromium with a profile of its own (deleted afterwards), for a closed network
    and a root user; chromedriver and the browser are stopped on the way out."""
    require_chromium()
    profile = Path(tempfile.mkdtemp(prefix="airlock-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root, in a container
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        f"--window-size={window[0]},{window[1]}",
    ):
        options.add_argument(flag)
    service = Service(executable_path=str(CHROMEDRIVER))
    try:
        driver = webdriver.Chrome(service=service, options=options)
    except WebDriverException as e:
        shutil.rmtree(profile, ignore_errors=True)
        pytest.fail(f"headless Chromium did not start: {e.msg or e}")
    try:
        driver.set_page_load_timeout(120)
        yield driver
    finally:
        try:
            driver.quit()  # the browser, then chromedriver (selenium stops it by its PID)
        finally:
            service.stop()
            shutil.rmtree(profile, ignore_errors=True)


def wait(driver: WebDriver, timeout: float = WAIT) -> WebDriverWait:
    return WebDriverWait(driver, timeout)


def page_text(driver: WebDriver) -> str:
    return driver.find_element(By.TAG_NAME, "body").text


def wait_for_text(driver: WebDriver, text: str, timeout: float = WAIT) -> None:
    wait(driver, timeout).until(
        EC.text_to_be_present_in_element((By.TAG_NAME, "body"), text),
        f"the page never showed {text!r}",
    )


def wait_for_state(driver: WebDriver, state: str, timeout: float = WAIT) -> WebElement:
    """The run's state badge (a `[data-slot=badge]`; log levels are badges too, in capitals)."""
    return wait(driver, timeout).until(
        EC.visibility_of_element_located(
            (By.XPATH, f"//*[@data-slot='badge'][normalize-space()='{state}']")
        ),
        f"the run's state never showed {state!r}",
    )


def open_tab(driver: WebDriver, name: str) -> None:
    """One of a run page's tabs (Details, Logs, Task Runs, ..., Artifacts, Parameters)."""
    tab = (By.XPATH, f"//button[@data-slot='tabs-trigger'][normalize-space()='{name}']")
    wait(driver).until(EC.element_to_be_clickable(tab), f"no {name} tab").click()
    wait(driver).until(
        lambda d: d.find_element(*tab).get_attribute("data-state") == "active",
        f"the {name} tab does not open",
    )


def detail(driver: WebDriver, name: str) -> WebElement:
    """A field of a run's Details tab (its name, then its value), scrolled into view."""
    label = wait(driver).until(
        EC.visibility_of_element_located((By.XPATH, f"//*[normalize-space(text())='{name}']")),
        f"no {name!r} in the run's details",
    )
    block = label.find_element(By.XPATH, "./..")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", block)
    return block


def open_resume_dialog(driver: WebDriver) -> WebElement:
    """On a paused run's page: the kebab menu → Resume; returns the dialog once its form is
    there (the form comes after the run input's schema is fetched)."""
    trigger = (
        By.XPATH,
        "//button[@data-slot='dropdown-menu-trigger'][normalize-space()='Open menu']",
    )
    resume = (By.XPATH, "//*[@role='menu']//*[@role='menuitem'][normalize-space()='Resume']")
    wait(driver).until(EC.element_to_be_clickable(trigger), "no actions menu on the run page")
    driver.find_element(*trigger).click()
    wait(driver).until(EC.element_to_be_clickable(resume), "no Resume in the run's menu").click()
    dialog = wait(driver).until(EC.visibility_of_element_located(DIALOG), "no Resume dialog")
    wait(driver).until(
        lambda _: dialog.find_elements(By.XPATH, ".//label[@for]"),
        "the Resume dialog shows no form",
    )
    return dialog


def request_text(driver: WebDriver, dialog: WebElement) -> str:
    """The run input's description (Markdown, rendered in a `.prose` block), once it shows: it
    renders a moment after the form's fields."""
    return wait(driver).until(
        lambda _: next((p.text for p in dialog.find_elements(By.CSS_SELECTOR, ".prose")), ""),
        "the Resume dialog shows no description (the request)",
    )


def _label(dialog: WebElement, label: str) -> WebElement:
    """A form field's label: "Digest" finds "Digest" and "Digest (Optional)"."""
    named = f"normalize-space()='{label}' or starts-with(normalize-space(), '{label} (')"
    found = dialog.find_elements(By.XPATH, f".//label[@for][{named}]")
    if not found:
        shown = [e.text for e in dialog.find_elements(By.XPATH, ".//label[@for]")]
        raise AssertionError(f"the Resume form has no field {label!r}; it has {shown}")
    return found[0]


def field(dialog: WebElement, label: str) -> WebElement:
    """A form field's widget (the element its label is for)."""
    return dialog.find_element(By.ID, _label(dialog, label).get_attribute("for"))


def choose(driver: WebDriver, dialog: WebElement, label: str, option: str) -> None:
    """Pick `option` in an enum field: its button ("Select" until chosen) opens a list."""
    button = field(dialog, label)
    assert button.get_attribute("aria-haspopup") == "listbox", f"{label} is not a select"
    button.click()
    item = (By.XPATH, f"//*[@role='listbox']//*[@role='option'][normalize-space()='{option}']")
    wait(driver).until(EC.element_to_be_clickable(item), f"no {option!r} in {label}").click()
    wait(driver).until(
        lambda _: button.text.strip() == option, f"{label} does not show {option!r} once chosen"
    )


def type_into(element: WebElement, text: str) -> None:
    """Replace a field's text as a person would (select all, delete, type): React sees every
    key. (Each key re-renders the form; on a slow machine that is a good part of a second.)"""
    element.click()
    if element.get_attribute("value"):
        element.send_keys(Keys.CONTROL, "a")
        element.send_keys(Keys.DELETE)
    element.send_keys(text)


def paste_into(driver: WebDriver, element: WebElement, text: str) -> None:
    """Put `text` in a field at once, as a paste does (typing a 1 KB signature key by key would
    re-render the form a thousand times): the value is set through the element's own setter and
    an `input` event tells React, as the browser does on paste."""
    driver.execute_script(
        "const [el, text] = arguments;"
        "const proto = Object.getPrototypeOf(el);"
        "Object.getOwnPropertyDescriptor(proto, 'value').set.call(el, text);"
        "el.dispatchEvent(new Event('input', {bubbles: true}));",
        element,
        text,
    )


def submit(driver: WebDriver, dialog: WebElement) -> None:
    """Press the dialog's Resume; fails with what the dialog says if it stays open (a form
    error shows in it)."""
    button = dialog.find_element(By.XPATH, ".//button[normalize-space()='Resume']")
    before = dialog.text
    for _ in range(2):
        settle(driver, dialog)
        wait(driver).until(EC.element_to_be_clickable(button), "Resume cannot be pressed").click()
        try:
            wait(driver, WAIT / 2).until(EC.invisibility_of_element_located(DIALOG))
            return
        except TimeoutException:
            # A press the page never acted on (CI saw one once under load: no request, no
            # toast, the dialog unchanged) is pressed again, as a person would; a dialog that
            # now says something else (a form error) is not.
            if dialog.text != before:
                break
    states = [b.text for b in driver.find_elements(By.CSS_SELECTOR, "[data-slot=badge]")]
    raise AssertionError(
        f"the Resume dialog stayed open (badges on the page: {states[:3]}); it says:\n{dialog.text}"
    )


def _size(driver: WebDriver) -> tuple[int, int]:
    size = driver.get_window_size()
    return size["width"], size["height"]


def _overflow(driver: WebDriver, dialog: WebElement) -> int:
    """How many pixels of the dialog's content are scrolled out of sight (vertically)."""
    return driver.execute_script(
        "let most = 0;"
        "for (const el of arguments[0].querySelectorAll('div')) {"
        "  if (getComputedStyle(el).overflowY === 'auto')"
        "    most = Math.max(most, el.scrollHeight - el.clientHeight); }"
        "return most;",
        dialog,
    )


def screenshot_whole_dialog(
    driver: WebDriver, dialog: WebElement, path: Path, tallest: int = 4000
) -> None:
    """A PNG of the whole dialog, none of it scrolled away: the window is made as tall as the
    content needs (the dialog is at most 80 % of the viewport's height), then put back."""
    width, height = _size(driver)
    for _ in range(4):  # the dialog grows with the window, not one for one
        hidden = _overflow(driver, dialog)
        now = _size(driver)[1]
        if hidden <= 1 or now >= tallest:
            break
        driver.set_window_size(width, min(tallest, now + int(hidden / 0.8) + 40))
    driver.execute_script(
        "document.activeElement?.blur();"  # no caret or focus ring in the picture
        "for (const el of arguments[0].querySelectorAll('*')) {"
        " el.scrollTop = 0; el.scrollLeft = 0; }",
        dialog,
    )
    try:
        dialog.screenshot(str(path))
    finally:
        driver.set_window_size(width, height)
        settle(driver, dialog)


def settle(driver: WebDriver, element: WebElement) -> None:
    """Until `element` stays put (same place and size on two reads in a row, within the
    viewport): a click computed during a relayout lands somewhere else."""
    last: list[object] = [None]

    def still(_: WebDriver) -> bool:
        rect = element.rect
        inside = rect["y"] + rect["height"] <= driver.execute_script("return innerHeight") + 1
        now, last[0] = last[0], (rect["x"], rect["y"], rect["width"], rect["height"])
        return inside and now == last[0]

    WebDriverWait(driver, WAIT, poll_frequency=0.25).until(still, "the dialog never settled")


@contextmanager
def step(driver: WebDriver, shots: Path, name: str) -> Iterator[None]:
    """One step a person takes: a screenshot after it, or of where it went wrong."""
    try:
        yield
    except BaseException as e:
        driver.save_screenshot(str(shots / f"{name}-FAILED.png"))
        e.add_note(f"screenshot: {shots / name}-FAILED.png")
        raise
    driver.save_screenshot(str(shots / f"{name}.png"))

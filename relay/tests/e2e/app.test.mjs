// End-to-end tests of the relayops web app: a real relay binary, a real SQLite store, and Debian's
// Chromium driven by playwright-core. Each state the app can show is screenshotted to test-output/e2e/.
//
// Run with scripts/e2e.sh (installs Chromium and the npm package, then `node --test`).

import assert from "node:assert/strict";
import { existsSync, readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import {
  CHROMIUM_PATH,
  RELAY_BIN,
  cleanupAll,
  launchBrowser,
  openApp,
  requireChromium,
  requireRelayBinary,
  screenshot,
  startRelay,
  OUTPUT_DIR,
} from "./harness.mjs";

const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

/** axe-core's violations on the page as it is now (injected through the DevTools protocol, so the
 * page's Content-Security-Policy neither blocks it nor has to be loosened). */
async function axeViolations(page) {
  await page.evaluate(AXE_SOURCE);
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document, { resultTypes: ["violations"] });
    return result.violations.map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  });
  return violations;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const TEST_TIMEOUT = 60_000;

// Stand-alone checks so that a missing browser or binary shows up as a named failure, not only as
// cancelled tests.
test("Chromium is installed at /usr/bin/chromium", () => {
  assert.ok(existsSync(CHROMIUM_PATH), `Chromium is missing at ${CHROMIUM_PATH}; run scripts/e2e.sh as root to install it`);
});

test("the relay binary exists", () => {
  assert.ok(existsSync(RELAY_BIN), `no relay binary at ${RELAY_BIN}; run \`cargo build -p relay\` or set RELAY_BIN`);
});

/** Resolve once the count shows a number, and return it. */
async function shownCount(page) {
  await page.waitForFunction(() => /^\d[\d,.\s]*$/.test(document.getElementById("count").textContent.trim()));
  return Number((await page.textContent("#count")).replace(/\D/g, ""));
}

async function waitForReady(page) {
  await page.waitForFunction(() => document.getElementById("status").dataset.state === "ready");
}

async function sendMessage(page, text, ttl) {
  await page.fill("#message", text);
  if (ttl !== undefined) await page.fill("#ttl", String(ttl));
  const responded = page.waitForResponse((r) => r.url().endsWith("/messages") && r.request().method() === "POST");
  await page.click("#send-button");
  const response = await responded;
  assert.equal(response.status(), 201, `POST /messages answered ${response.status()}`);
  await page.waitForSelector("#sent-id");
  return (await page.textContent("#sent-id")).trim();
}

async function readMessage(page, id) {
  await page.fill("#lookup-id", id);
  const responded = page.waitForResponse((r) => r.url().includes("/messages/") && r.request().method() === "GET");
  await page.click("#read-button");
  const response = await responded;
  await page.waitForSelector("#read-result .notice, #read-error .notice");
  return response;
}

/** The error notice under the read form, as the user sees it. */
async function readFailure(page) {
  const notice = page.locator("#read-error .notice");
  await notice.waitFor();
  return {
    kind: await notice.getAttribute("data-kind"),
    text: (await notice.innerText()).replace(/\s+/g, " "),
    requestId: (await notice.locator(".request-id code").textContent())?.trim(),
  };
}

/** Nothing executed, nothing crashed, and the app kept within its Content-Security-Policy. */
async function assertClean(app) {
  assert.deepEqual(app.dialogs, [], "a dialog opened: some data was executed as code");
  assert.deepEqual(app.pageErrors, [], "the page threw uncaught exceptions");
  assert.deepEqual(await app.cspViolations(), [], "the app violated its Content-Security-Policy");
}

describe("web app against a real relay", () => {
  let relay;
  let context;

  before(async () => {
    requireChromium();
    requireRelayBinary();
    relay = await startRelay("main");
    context = await launchBrowser();
  });

  after(cleanupAll);

  test("is served with a strict CSP and shows a ready relay with its version", { timeout: TEST_TIMEOUT }, async () => {
    const app = await openApp(context, relay.baseUrl);
    const { page, response } = app;
    assert.equal(response.status(), 200);
    const csp = response.headers()["content-security-policy"] || "";
    for (const directive of ["default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"]) {
      assert.ok(csp.includes(directive), `CSP lacks "${directive}": ${csp || "(no header)"}`);
    }
    await waitForReady(page);
    const health = await (await fetch(`${relay.baseUrl}/healthz`)).json();
    assert.equal(await page.textContent("#status-label"), "Relay ready");
    assert.equal(await page.textContent("#status-version"), `v${health.version}`);
    assert.equal(await page.textContent("#status-banner"), "", "no warning banner while the relay is ready");
    await shownCount(page);
    // The stylesheet applied (a CSP or MIME problem would leave the page unstyled).
    const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.notEqual(bg, "rgba(0, 0, 0, 0)", "app.css did not apply");
    await screenshot(page, "01-loaded-status-ready");
    await page.emulateMedia({ colorScheme: "dark" });
    await screenshot(page, "01-loaded-dark-scheme");
    await assertClean(app);
    await page.close();
  });

  test("sending shows the id, raises the count, and reading the id shows the same text", { timeout: TEST_TIMEOUT }, async () => {
    const app = await openApp(context, relay.baseUrl);
    const { page } = app;
    const before = await shownCount(page);
    const text = `Deploy window opens at 14:00 UTC.\nBring coffee ☕ — ${Date.now()}`;

    const id = await sendMessage(page, text, 600);
    assert.match(id, UUID_RE);
    await page.waitForFunction(
      (expected) => document.getElementById("count").textContent.replace(/\D/g, "") === String(expected),
      before + 1,
    );
    assert.equal(await page.inputValue("#message"), "", "the message field is cleared after sending");
    assert.match(await page.innerText("#send-result"), /Expires/);

    await page.click("#copy-id");
    await page.waitForSelector("#copy-status[data-state]");
    assert.equal(await page.getAttribute("#copy-status", "data-state"), "ok", await page.textContent("#copy-status"));
    assert.equal(await page.evaluate(() => navigator.clipboard.readText()), id);
    await screenshot(page, "02-message-sent");

    // The refresh button reads the count again from the relay.
    const refreshed = page.waitForResponse((r) => r.url().endsWith("/messages") && r.request().method() === "GET");
    await page.click("#count-refresh");
    await refreshed;
    assert.equal(await shownCount(page), before + 1);

    const response = await readMessage(page, id);
    assert.equal(response.status(), 200);
    assert.equal(await page.textContent("#message-text"), text);
    assert.match(await page.innerText("#read-result"), new RegExp(id));
    await screenshot(page, "03-message-read");
    await assertClean(app);
    await page.close();
  });

  test("an unknown id says the message was not found, with a request id to quote", { timeout: TEST_TIMEOUT }, async () => {
    const app = await openApp(context, relay.baseUrl);
    const { page } = app;
    const response = await readMessage(page, "0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b");
    assert.equal(response.status(), 404);
    const failure = await readFailure(page);
    assert.equal(failure.kind, "not-found");
    assert.match(failure.text, /Message not found/);
    assert.equal(failure.requestId, response.headers()["x-request-id"]);
    assert.ok(failure.requestId, "no request id shown");
    await screenshot(page, "04-not-found");
    await assertClean(app);
    await page.close();
  });

  test("a message read after its time-to-live says it expired", { timeout: TEST_TIMEOUT }, async () => {
    const app = await openApp(context, relay.baseUrl);
    const { page } = app;
    const id = await sendMessage(page, "gone in a second", 1);
    await sleep(2_200);
    const response = await readMessage(page, id);
    assert.equal(response.status(), 404, "an expired message must not be served");
    const failure = await readFailure(page);
    assert.equal(failure.kind, "expired");
    assert.match(failure.text, /Message expired/);
    assert.ok(failure.requestId);
    await screenshot(page, "05-expired");
    await assertClean(app);
    await page.close();
  });

  test("a malformed id is one mistake with one error: flagged in the field, nothing sent", { timeout: TEST_TIMEOUT }, async () => {
    const app = await openApp(context, relay.baseUrl);
    const { page } = app;
    await shownCount(page);
    let sent = 0;
    page.on("request", (r) => {
      if (r.url().includes("/messages/")) sent += 1;
    });
    await page.fill("#lookup-id", "not-a-message-id");
    await page.click("#read-button");
    await page.waitForFunction(() => document.getElementById("lookup-id").getAttribute("aria-invalid") === "true");
    assert.match(await page.textContent("#lookup-error"), /Not a UUID/);
    assert.equal(await page.locator("#read-error .notice, #read-result .notice").count(), 0, "a second error for the same mistake");
    assert.equal(sent, 0, "a malformed id was sent to the relay");
    await screenshot(page, "06-malformed-id");
    await assertClean(app);
    await page.close();
  });

  test("a send that fails after one that worked no longer shows the first one's success", { timeout: TEST_TIMEOUT }, async () => {
    const app = await openApp(context, relay.baseUrl);
    const { page } = app;
    await waitForReady(page);
    await sendMessage(page, "first");
    assert.equal(await page.locator("#send-result .notice-success").count(), 1);
    // Refused in the form (no message), then refused by the relay (too large).
    await page.fill("#message", "");
    await page.click("#send-button");
    await page.waitForFunction(() => document.getElementById("message-error").textContent !== "");
    assert.equal(await page.locator("#send-result .notice-success").count(), 0, "the form refused the send, the old success stayed");
    await page.fill("#message", "x".repeat(70 * 1024));
    const refused = page.waitForResponse((r) => r.url().endsWith("/messages") && r.request().method() === "POST");
    await page.click("#send-button");
    assert.equal((await refused).status(), 413);
    await page.waitForSelector("#send-error .notice");
    assert.equal(await page.locator("#send-result .notice-success").count(), 0, "the relay refused the send, the old success stayed");
    await assertClean(app);
    await page.close();
  });

  test("an expiry reads the same in the form's hint and in the sent message", { timeout: TEST_TIMEOUT }, async () => {
    // The page's clock runs 1.5 s ahead of the relay's, as a slow network or a skewed laptop would:
    // an hour's expiry is then 3,598.5 s away when shown, which used to read "in 60 minutes".
    const page = await context.newPage();
    await page.clock.setSystemTime(new Date(Date.now() + 1500));
    await page.goto(`${relay.baseUrl}/`, { waitUntil: "load" });
    await waitForReady(page);
    await page.fill("#ttl", "3600");
    assert.match(await page.textContent("#ttl-hint"), /Expires 1 hour after it is sent/);
    await sendMessage(page, "an hour", 3600);
    const sent = (await page.innerText("#send-result")).replace(/\s+/g, " ");
    assert.match(sent, /\(in 1 hour\)/, sent);
    await page.close();
  });

  test("no layout shift while the page loads and the count refreshes, from 320 to 1440 px wide", { timeout: 120_000 }, async () => {
    const widths = [320, 360, 390, 412, 600, 800, 1024, 1440];
    const report = {};
    for (const width of widths) {
      const page = await context.newPage();
      await page.setViewportSize({ width, height: 800 });
      await page.addInitScript(() => {
        window.__shifts = [];
        new PerformanceObserver((list) => {
          for (const entry of list.getEntries()) {
            if (!entry.hadRecentInput) window.__shifts.push(entry.value);
          }
        }).observe({ type: "layout-shift", buffered: true });
      });
      await page.goto(`${relay.baseUrl}/`, { waitUntil: "load" });
      await waitForReady(page);
      await shownCount(page);
      // Refreshes the page starts by itself (no user input, so their shifts count), twice.
      for (let i = 0; i < 2; i++) {
        const refreshed = page.waitForResponse((r) => r.url().endsWith("/messages") && r.request().method() === "GET");
        await page.evaluate(() => document.getElementById("count-refresh").click());
        await refreshed;
        await sleep(300);
      }
      const shift = await page.evaluate(() => window.__shifts.reduce((a, b) => a + b, 0));
      report[width] = Number(shift.toFixed(4));
      await page.close();
    }
    mkdirSync(OUTPUT_DIR, { recursive: true });
    writeFileSync(`${OUTPUT_DIR}/layout-shift.json`, `${JSON.stringify(report, null, 2)}\n`);
    for (const [width, shift] of Object.entries(report)) {
      assert.ok(shift < 0.1, `cumulative layout shift ${shift} at ${width} px (all: ${JSON.stringify(report)})`);
    }
  });

  test("a full UUID fits the id field on 390 and 320 px phones", { timeout: TEST_TIMEOUT }, async () => {
    for (const width of [390, 320]) {
      const app = await openApp(context, relay.baseUrl, { viewport: { width, height: 800 } });
      const { page } = app;
      await page.fill("#lookup-id", "0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b");
      const fits = await page.evaluate(() => {
        const input = document.getElementById("lookup-id");
        return { scroll: input.scrollWidth, client: input.clientWidth };
      });
      assert.ok(fits.scroll <= fits.client, `at ${width} px the id needs ${fits.scroll}px in a ${fits.client}px field`);
      await page.close();
    }
  });

  test("axe finds no accessibility violations on the app and on /saved, and /saved leads back", { timeout: TEST_TIMEOUT }, async () => {
    const app = await openApp(context, relay.baseUrl);
    const { page } = app;
    await waitForReady(page);
    await shownCount(page);
    assert.deepEqual(await axeViolations(page), [], "axe on /");
    await page.goto(`${relay.baseUrl}/saved`, { waitUntil: "load" });
    assert.match(await page.textContent("h1"), /^The saved string is /);
    assert.deepEqual(await axeViolations(page), [], "axe on /saved");
    await screenshot(page, "16-saved");
    await page.click("a[href='/']");
    await page.waitForSelector("#send-form");
    await assertClean(app);
    await page.close();
  });

  test("the send form works with the keyboard alone, with a visible focus", { timeout: TEST_TIMEOUT }, async () => {
    const app = await openApp(context, relay.baseUrl);
    const { page } = app;
    await shownCount(page);
    const focused = () => page.evaluate(() => document.activeElement?.id || document.activeElement?.tagName);
    const tabTo = async (id) => {
      for (let i = 0; i < 15 && (await focused()) !== id; i++) await page.keyboard.press("Tab");
      assert.equal(await focused(), id, `Tab never reached #${id}`);
      const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
      assert.notEqual(outline, "none", `#${id} has no visible focus outline`);
    };

    await tabTo("message");
    await page.keyboard.type("typed without a mouse");
    await page.keyboard.press("Tab");
    assert.equal(await focused(), "ttl");
    await page.keyboard.type("120");
    await page.keyboard.press("Tab");
    assert.equal(await focused(), "send-button");
    await page.keyboard.press("Enter");
    await page.waitForSelector("#sent-id");
    const id = (await page.textContent("#sent-id")).trim();
    assert.match(id, UUID_RE);
    assert.equal(await focused(), "send-button", "focus stays where the user left it");

    await tabTo("copy-id");
    await page.keyboard.press("Enter");
    await page.waitForSelector("#copy-status[data-state='ok']");

    await tabTo("lookup-id");
    await page.keyboard.type(id);
    const responded = page.waitForResponse((r) => r.url().endsWith(`/messages/${id}`));
    await page.keyboard.press("Enter");
    assert.equal((await responded).status(), 200);
    await page.waitForSelector("#message-text");
    assert.equal(await page.textContent("#message-text"), "typed without a mouse");
    await screenshot(page, "07-keyboard-flow");

    // Enter in the message adds a line; Ctrl+Enter sends.
    await page.focus("#message");
    await page.keyboard.type("line one");
    await page.keyboard.press("Enter");
    await page.keyboard.type("line two");
    const posted = page.waitForResponse((r) => r.url().endsWith("/messages") && r.request().method() === "POST");
    await page.keyboard.press("Control+Enter");
    assert.equal((await posted).request().postDataJSON().message, "line one\nline two");
    await page.waitForFunction((old) => document.getElementById("sent-id")?.textContent !== old && document.getElementById("sent-id"), id);
    await assertClean(app);
    await page.close();
  });

  test("bad input is flagged in the form, and an oversized message gets the relay's reason", { timeout: TEST_TIMEOUT }, async () => {
    const app = await openApp(context, relay.baseUrl);
    const { page } = app;
    await shownCount(page);
    const posts = [];
    page.on("request", (r) => r.method() === "POST" && posts.push(r.url()));

    await page.click("#send-button");
    assert.equal(await page.getAttribute("#message", "aria-invalid"), "true");
    assert.match(await page.textContent("#message-error"), /Enter a message/);
    assert.equal(await page.evaluate(() => document.activeElement.id), "message", "focus goes to the field to fix");

    await page.fill("#message", "hello");
    await page.fill("#ttl", "0");
    await page.click("#send-button");
    assert.equal(await page.getAttribute("#ttl", "aria-invalid"), "true");
    assert.match(await page.textContent("#ttl-error"), /from 1 to 31,536,000/);
    assert.equal(await page.getAttribute("#message", "aria-invalid"), null, "the fixed field is no longer flagged");
    assert.deepEqual(posts, [], "nothing is sent while the form is invalid");

    await page.click("#read-button");
    assert.match(await page.textContent("#lookup-error"), /Enter a message id/);
    await screenshot(page, "14-form-validation");

    // The relay's size limit (64 KiB by default) is its own to enforce: its reason is shown.
    await page.fill("#ttl", "");
    await page.fill("#message", "x".repeat(70_000));
    assert.match(await page.textContent("#message-bytes"), /70,000 bytes/);
    const responded = page.waitForResponse((r) => r.url().endsWith("/messages") && r.request().method() === "POST");
    await page.click("#send-button");
    const response = await responded;
    assert.equal(response.status(), 413);
    const notice = page.locator("#send-error .notice");
    await notice.waitFor();
    assert.equal(await notice.getAttribute("data-kind"), "too-large");
    assert.match(await notice.innerText(), /Message too large[\s\S]*70000 bytes[\s\S]*Request id/);
    assert.equal(await page.inputValue("#message"), "x".repeat(70_000), "a rejected message is kept for editing");
    await assertClean(app);
    await page.close();
  });

  test("when the clipboard refuses, the id is selected for a manual copy", { timeout: TEST_TIMEOUT }, async () => {
    const page = await context.newPage();
    await page.addInitScript(() => {
      navigator.clipboard.writeText = () => Promise.reject(new DOMException("denied", "NotAllowedError"));
    });
    await page.goto(`${relay.baseUrl}/`);
    const id = await sendMessage(page, "copy me");
    await page.click("#copy-id");
    await page.waitForSelector("#copy-status[data-state='failed']");
    assert.match(await page.textContent("#copy-status"), /press Ctrl\+C/);
    assert.equal(await page.evaluate(() => window.getSelection().toString()), id);
    await screenshot(page, "15-copy-fallback");
    await page.close();
  });

  test("a 360px-wide phone shows everything without horizontal scrolling", { timeout: TEST_TIMEOUT }, async () => {
    const app = await openApp(context, relay.baseUrl, { viewport: { width: 360, height: 740 } });
    const { page } = app;
    await waitForReady(page);
    await shownCount(page);
    // Worst case for the layout: an unbroken long word, and a long id in an error.
    const id = await sendMessage(page, `${"x".repeat(300)} end`, 31_536_000);
    await readMessage(page, id);
    await page.waitForSelector("#message-text");
    const overflow = await page.evaluate(() => ({
      scroll: document.documentElement.scrollWidth,
      client: document.documentElement.clientWidth,
      wide: [...document.querySelectorAll("body *")]
        .filter((el) => el.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5)
        .map((el) => el.id || el.className || el.tagName),
    }));
    assert.ok(overflow.scroll <= overflow.client, `page is ${overflow.scroll}px wide in a ${overflow.client}px viewport`);
    assert.deepEqual(overflow.wide, [], "elements stick out to the right");
    await screenshot(page, "08-narrow-360");
    await assertClean(app);
    await page.close();
  });

  test("network failures and an unavailable relay get their own messages (simulated in the browser)", { timeout: TEST_TIMEOUT }, async () => {
    const app = await openApp(context, relay.baseUrl);
    const { page } = app;
    await shownCount(page);
    const id = "0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b";

    // A 503 shaped exactly as the relay sends one when its store is down.
    await page.route("**/messages/*", (route) =>
      route.fulfill({
        status: 503,
        headers: { "content-type": "application/problem+json", "retry-after": "2", "x-request-id": "req-503-header" },
        body: JSON.stringify({
          type: "urn:relayops:problem:unavailable",
          title: "Service Unavailable",
          status: 503,
          detail: "the store is unavailable; retry after 2 s",
          request_id: "req-503-body",
        }),
      }),
    );
    await readMessage(page, id);
    let failure = await readFailure(page);
    assert.equal(failure.kind, "unavailable");
    assert.match(failure.text, /Relay unavailable.*Try again in 2 seconds/);
    assert.equal(failure.requestId, "req-503-body", "the problem body's request id wins over the header");
    await screenshot(page, "09-unavailable");

    await page.unroute("**/messages/*");
    await page.route("**/messages/*", (route) => route.abort("connectionrefused"));
    await page.fill("#lookup-id", id);
    await page.click("#read-button");
    await page.waitForSelector("#read-error .notice[data-kind='network']");
    failure = await readFailure(page);
    assert.match(failure.text, /Cannot reach the relay/);
    assert.match(failure.requestId, UUID_RE, "the id the browser sent is shown for a request with no answer");
    await screenshot(page, "10-network-failure");
    await assertClean(app);
    await page.close();
  });

  test("the status strip shows a relay that is not ready, and one that is unreachable", { timeout: TEST_TIMEOUT }, async () => {
    const page = await context.newPage();
    await page.route("**/readyz", (route) =>
      route.fulfill({
        status: 503,
        headers: { "content-type": "application/problem+json" },
        body: JSON.stringify({
          type: "urn:relayops:problem:not-ready",
          title: "Service Unavailable",
          status: 503,
          detail: "the store is not reachable",
          request_id: "r1",
          version: "0.1.0",
        }),
      }),
    );
    await page.goto(`${relay.baseUrl}/`);
    await page.waitForFunction(() => document.getElementById("status").dataset.state === "not-ready");
    assert.equal(await page.textContent("#status-label"), "Relay not ready");
    assert.equal(await page.textContent("#status-version"), "v0.1.0");
    assert.match(await page.textContent("#status-banner"), /not ready \(the store is not reachable\)/);
    await screenshot(page, "11-status-not-ready");

    await page.unroute("**/readyz");
    await page.route("**/readyz", (route) => route.abort("connectionrefused"));
    await page.reload();
    await page.waitForFunction(() => document.getElementById("status").dataset.state === "unreachable");
    assert.equal(await page.textContent("#status-label"), "Relay unreachable");
    assert.match(await page.textContent("#status-banner"), /cannot be reached/);
    await page.close();
  });

  for (const bypassCSP of [false, true]) {
    const label = bypassCSP ? "even with the CSP switched off" : "under the CSP";
    test(`markup in messages is shown as text and never runs, ${label}`, { timeout: TEST_TIMEOUT }, async () => {
      const ctx = bypassCSP ? await launchBrowser({ bypassCSP: true }) : context;
      const app = await openApp(ctx, relay.baseUrl);
      const { page } = app;
      await shownCount(page);
      const payloads = [
        `<img src=x onerror=alert(1)>`,
        `<script>alert(1)</script>`,
        `"><svg onload=alert(1)><a href="javascript:alert(1)">x</a>`,
      ];
      for (const payload of payloads) {
        const id = await sendMessage(page, payload);
        await readMessage(page, id);
        await page.waitForSelector("#message-text");
        assert.equal(await page.textContent("#message-text"), payload, "the text is shown literally");
        const injected = await page.evaluate(() => ({
          imgs: [...document.querySelectorAll("img")].map((img) => img.getAttribute("src")),
          scripts: [...document.querySelectorAll("script")].map((s) => s.getAttribute("src")),
          svgs: document.querySelectorAll("main svg").length,
          links: document.querySelectorAll("main a[href^='javascript']").length,
          children: document.getElementById("message-text").children.length,
        }));
        assert.deepEqual(injected.imgs, ["/favicon.svg"], "an <img> was injected");
        assert.deepEqual(injected.scripts, ["/assets/app.js"], "a <script> was injected");
        assert.equal(injected.svgs, 0, "an <svg> was injected");
        assert.equal(injected.links, 0, "a javascript: link was injected");
        assert.equal(injected.children, 0, "the message text holds elements");
      }
      // All of them at once, for the screenshot.
      const all = payloads.join("\n");
      await readMessage(page, await sendMessage(page, all));
      await page.waitForSelector("#message-text");
      assert.equal(await page.textContent("#message-text"), all);
      // Give any deferred handler (onerror fires asynchronously) the chance to run before judging.
      await sleep(300);
      await screenshot(page, bypassCSP ? "12-xss-literal-no-csp" : "12-xss-literal");
      if (bypassCSP) {
        assert.deepEqual(app.dialogs, []);
        assert.deepEqual(app.pageErrors, []);
      } else {
        await assertClean(app);
      }
      await page.close();
    });
  }
});

describe("web app against a rate-limited relay", () => {
  let relay;
  let context;

  before(async () => {
    requireChromium();
    requireRelayBinary();
    relay = await startRelay("rate-limited", { RELAY_RATE_LIMIT: "1", RELAY_RATE_LIMIT_BURST: "1" });
    context = await launchBrowser();
  });

  after(cleanupAll);

  test("a rate-limited read says when to retry and shows the request id", { timeout: TEST_TIMEOUT }, async () => {
    const app = await openApp(context, relay.baseUrl);
    const { page } = app;
    let limited = null;
    // One request per second with a burst of one: back-to-back reads must hit the limit quickly.
    for (let attempt = 0; attempt < 10 && !limited; attempt++) {
      const response = await readMessage(page, "0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b");
      if (response.status() === 429) limited = response;
    }
    assert.ok(limited, "ten back-to-back reads never got a 429");
    const failure = await readFailure(page);
    assert.equal(failure.kind, "rate-limited");
    const retryAfter = limited.headers()["retry-after"];
    assert.match(retryAfter || "", /^\d+$/, "a 429 must carry Retry-After in seconds");
    assert.match(failure.text, new RegExp(`Too many requests.*Try again in ${retryAfter} seconds?`));
    const problem = await limited.json();
    assert.ok(failure.requestId, "no request id shown");
    assert.equal(failure.requestId, problem.request_id || limited.headers()["x-request-id"]);
    await screenshot(page, "13-rate-limited");
    await assertClean(app);
    await page.close();
  });
});

after(() => console.log(`screenshots and relay logs: ${OUTPUT_DIR}`));

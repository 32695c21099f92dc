// Test harness for the web app's end-to-end tests: starts real relay processes on free loopback ports
// with fresh SQLite stores, and Debian's Chromium through playwright-core.
//
// It never downloads a browser and never skips: a missing relay binary or a missing Chromium is an error.

import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";

import { chromium } from "playwright-core";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
export const OUTPUT_DIR = join(REPO_ROOT, "test-output", "e2e");
export const CHROMIUM_PATH = "/usr/bin/chromium";
export const RELAY_BIN = resolve(REPO_ROOT, process.env.RELAY_BIN || "target/debug/relay");

const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
];

const cleanups = [];

/** Run every registered cleanup (relays, browsers, temp dirs), newest first. */
export async function cleanupAll() {
  while (cleanups.length > 0) {
    const cleanup = cleanups.pop();
    try {
      await cleanup();
    } catch (error) {
      console.error(`cleanup failed: ${error.message}`);
    }
  }
}

export function requireChromium() {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new Error(
      `Chromium is missing at ${CHROMIUM_PATH}: install it with \`apt-get install -y chromium\` ` +
        "(scripts/e2e.sh does). These tests never download a browser and never skip.",
    );
  }
}

export function requireRelayBinary() {
  if (!existsSync(RELAY_BIN)) {
    throw new Error(
      `The relay binary is missing at ${RELAY_BIN}: build it with \`cargo build -p relay\`, or set RELAY_BIN.`,
    );
  }
}

/** A port that was free a moment ago: bind port 0 and give it back. */
async function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

/**
 * Start a relay on a free loopback port with a fresh SQLite store, wait until /healthz answers, and
 * return `{ baseUrl, logPath, stop }`. Extra environment variables override the defaults.
 */
export async function startRelay(name, extraEnv = {}) {
  requireRelayBinary();
  mkdirSync(OUTPUT_DIR, { recursive: true });
  const dataDir = mkdtempSync(join(tmpdir(), "relayops-e2e-store-"));
  const port = await freePort();
  const baseUrl = `http://127.0.0.1:${port}`;
  const logPath = join(OUTPUT_DIR, `relay-${name}.log`);
  const logFd = openSync(logPath, "w");
  const child = spawn(RELAY_BIN, [], {
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      // Let a developer turn up the relay's log level for a failing run.
      ...(process.env.RUST_LOG ? { RUST_LOG: process.env.RUST_LOG } : {}),
      RELAY_LISTEN: `127.0.0.1:${port}`,
      RELAY_STORE: `sqlite:${join(dataDir, "relay.db")}`,
      RELAY_RATE_LIMIT: "0",
      RELAY_LOG_FORMAT: "json",
      ...extraEnv,
    },
    stdio: ["ignore", logFd, logFd],
  });
  closeSync(logFd);
  let exited = null;
  child.once("exit", (code, signal) => {
    exited = { code, signal };
  });

  const stop = async () => {
    if (exited === null) {
      child.kill("SIGTERM");
      for (let i = 0; i < 50 && exited === null; i++) await sleep(100);
      if (exited === null) child.kill("SIGKILL");
    }
    rmSync(dataDir, { recursive: true, force: true });
  };
  cleanups.push(stop);

  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited !== null) {
      throw new Error(
        `relay (${name}) exited before answering /healthz (code ${exited.code}, signal ${exited.signal}); ` +
          `its log:\n${tail(logPath)}`,
      );
    }
    try {
      const response = await fetch(`${baseUrl}/healthz`, { signal: AbortSignal.timeout(1_000) });
      if (response.ok) return { baseUrl, logPath, stop };
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`relay (${name}) did not answer ${baseUrl}/healthz within 30 s; its log:\n${tail(logPath)}`);
    }
    await sleep(100);
  }
}

function tail(path, lines = 30) {
  try {
    return readFileSync(path, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

/**
 * Launch Debian's Chromium headless with a fresh profile. `bypassCSP` turns the page's
 * Content-Security-Policy off, to prove that rendering alone (not the CSP) keeps data inert.
 */
export async function launchBrowser({ bypassCSP = false } = {}) {
  requireChromium();
  const profileDir = mkdtempSync(join(tmpdir(), "relayops-e2e-profile-"));
  const context = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 860 },
    bypassCSP,
    permissions: ["clipboard-read", "clipboard-write"],
    locale: "en-GB",
    timezoneId: "UTC",
    colorScheme: "light",
  });
  context.setDefaultTimeout(10_000);
  cleanups.push(async () => {
    await context.close();
    rmSync(profileDir, { recursive: true, force: true });
  });
  return context;
}

/**
 * Open the app in a new page and record what must never happen there: dialogs (an executed payload),
 * uncaught exceptions, and Content-Security-Policy violations (the app breaking its own policy).
 */
export async function openApp(context, baseUrl, { viewport } = {}) {
  const page = await context.newPage();
  if (viewport) await page.setViewportSize(viewport);
  const dialogs = [];
  const pageErrors = [];
  page.on("dialog", (dialog) => {
    dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
  page.on("pageerror", (error) => pageErrors.push(error.message));
  await page.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener("securitypolicyviolation", (event) => {
      window.__cspViolations.push(`${event.violatedDirective} blocked ${event.blockedURI || "inline"}`);
    });
  });
  const response = await page.goto(`${baseUrl}/`, { waitUntil: "load" });
  const app = {
    page,
    response,
    dialogs,
    pageErrors,
    cspViolations: () => page.evaluate(() => window.__cspViolations),
  };
  return app;
}

export async function screenshot(page, name) {
  mkdirSync(OUTPUT_DIR, { recursive: true });
  const path = join(OUTPUT_DIR, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}

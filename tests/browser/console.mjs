// Drives the admin console in Debian's Chromium (playwright-core from tools/), as treasury,
// an approver and an operator would, and saves a screenshot of each page. Started by the Rust
// test `console::the_console_works_in_a_real_browser`, which seeds the data and checks the
// database afterwards; this script checks what the pages show. Exits non-zero on the first
// failed check.
//
// Environment: CONSOLE_BASE (http://localhost:port), SHOTS (a directory), tokens ADMIN, APPROVER,
// SELF_APPROVER (the payout creator's approver identity), OPERATOR, TRADER; DEAL (in ISSUE),
// OUTCOMES (the template's, comma-separated), CAP (the reason code's offset cap), PAYOUT (pending
// approval), DESTINATION (EIP-55).

import { createRequire } from "node:module";
import crypto from "node:crypto";
import path from "node:path";

const require = createRequire(path.resolve(process.env.TOOLS_DIR, "package.json"));
const { chromium } = require("playwright-core");
const env = process.env;
const base = env.CONSOLE_BASE;

function check(ok, what) {
  if (!ok) { throw new Error(`check failed: ${what}`); }
  console.log(`ok - ${what}`);
}

function base32(text) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0, value = 0; const out = [];
  for (const c of text.trim()) {
    value = (value << 5) | alphabet.indexOf(c); bits += 5;
    if (bits >= 8) { bits -= 8; out.push((value >>> bits) & 0xff); }
  }
  return Buffer.from(out);
}

// RFC 6238, as an authenticator app computes it.
function totp(secret, offset = 0) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 1000 / 30) + offset));
  const h = crypto.createHmac("sha1", secret).update(counter).digest();
  const o = h[h.length - 1] & 0x0f;
  const code = ((h[o] & 0x7f) << 24 | h[o + 1] << 16 | h[o + 2] << 8 | h[o + 3]) % 1000000;
  return String(code).padStart(6, "0");
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(env.SHOTS, `${name}.png`), fullPage: true });
}

async function signIn(browser, token, who) {
  const context = await browser.newContext({ timezoneId: "Asia/Ulaanbaatar", locale: "en-GB" });
  const page = await context.newPage();
  page.on("dialog", (d) => d.accept());
  await page.goto(`${base}/admin/login`);
  await page.fill("input[name=token]", token);
  await page.click("button[type=submit]");
  if (page.url().endsWith("/admin/2fa/enrol")) {
    await shot(page, `${who}-2fa-enrol`);
    const secret = base32(await page.textContent("#totp-secret"));
    await page.fill("input[name=code]", totp(secret));
    await page.click("button[type=submit]");
    await page.waitForSelector("#recovery-codes");
    check((await page.locator("#recovery-codes li").count()) === 8, `${who} gets 8 recovery codes`);
    await page.click("text=Continue to the console");
  }
  await page.waitForURL(`${base}/admin`);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === "__Host-treasuryd_session");
  check(session && session.httpOnly && session.secure && session.sameSite === "Strict" && session.path === "/",
    `${who}'s session cookie is __Host-, HttpOnly, Secure, SameSite=Strict, Path=/`);
  return page;
}

async function api(method, route, token, body, key) {
  const headers = { authorization: `Bearer ${token}`, "content-type": "application/json" };
  if (key) { headers["idempotency-key"] = key; }
  const r = await fetch(`${base}${route}`, { method, headers, body: body ? JSON.stringify(body) : undefined });
  return [r.status, await r.json()];
}

async function main() {
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    // An Admin signs in with a token and enrols TOTP; every page renders.
    const admin = await signIn(browser, env.ADMIN, "admin");
    for (const [route, name] of [["/admin", "home"], ["/admin/disputes", "disputes"], ["/admin/deals", "deals"], [`/admin/deals/${env.DEAL}`, "deal"],
      ["/admin/payouts", "payouts"], [`/admin/payouts/${env.PAYOUT}`, "payout"], ["/admin/treasury", "treasury"], ["/admin/webhooks", "webhooks"],
      ["/admin/trust", "trust"], ["/admin/pilot", "pilot"]]) {
      const r = await admin.goto(`${base}${route}`);
      check(r.status() === 200, `${route} renders for an Admin`);
      await shot(admin, name);
    }
    // Times in the viewer's zone, UTC on hover.
    await admin.goto(`${base}/admin/deals/${env.DEAL}`);
    const t = admin.locator("time[data-local]").first();
    check((await t.getAttribute("title")).endsWith(" UTC"), "times show UTC on hover");
    check((await t.textContent()) !== (await t.getAttribute("datetime")), "times are shown in the viewer's zone");
    check(/left|due now/.test(await admin.locator("#timers .countdown").first().textContent()), "the dispute timer counts down");

    // The operator resolves the dispute: only the template's outcomes; an offset over the cap
    // is refused with a visible message; one within it settles the deal.
    const operator = await signIn(browser, env.OPERATOR, "operator");
    await operator.goto(`${base}/admin/disputes`);
    await operator.click(`a[href="/admin/deals/${env.DEAL}"]`);
    const options = await operator.locator("#resolve select[name=outcome] option").allTextContents();
    check(options.join(",") === env.OUTCOMES, `the outcome control offers exactly ${env.OUTCOMES} (got ${options})`);
    check((await operator.locator("#resolve input[list], #resolve datalist").count()) === 0, "no free-text outcome");
    check((await operator.textContent("#offset-cap")).includes(env.CAP), `the cap ${env.CAP} is shown`);
    await operator.selectOption("#resolve select[name=outcome]", "OFFSET");
    await operator.fill("#resolve input[name=offset]", String(Number(env.CAP) + 50));
    await operator.fill("#resolve textarea[name=reason]", "mileage 40,000 km higher than listed");
    await operator.click("#resolve button[type=submit]");
    await operator.waitForSelector("p.error");
    check(/offset|cap/i.test(await operator.textContent("p.error")), "an over-cap offset is refused with a visible message");
    check((await operator.textContent("#deal-state")).trim() === "ISSUE", "and nothing changed");
    await shot(operator, "dispute-over-cap");
    await operator.selectOption("#resolve select[name=outcome]", "OFFSET");
    await operator.fill("#resolve input[name=offset]", String(Number(env.CAP) - 20));
    await operator.fill("#resolve textarea[name=reason]", "mileage verified; part of the holdback back");
    await operator.click("#resolve button[type=submit]");
    await operator.waitForSelector("p.notice");
    check((await operator.textContent("#deal-state")).trim() === "SETTLED", "the dispute resolved and the deal settled");
    await shot(operator, "dispute-resolved");

    // The payout's creator, as an Approver, cannot approve it; a second person can.
    const self = await signIn(browser, env.SELF_APPROVER, "self-approver");
    await self.goto(`${base}/admin/payouts/${env.PAYOUT}`);
    check((await self.locator("#approve").count()) === 0, "the creator gets no approve button");
    const approver = await signIn(browser, env.APPROVER, "approver");
    await approver.goto(`${base}/admin/payouts?state=pending_approval`);
    await approver.click(`a[href="/admin/payouts/${env.PAYOUT}"]`);
    await approver.click("#approve button[type=submit]");
    await approver.waitForSelector("p.notice");
    check(["queued", "broadcast", "confirmed"].includes((await approver.textContent("#payout-state")).trim()), "approved by a second person");
    await shot(approver, "payout-approved");
    check((await approver.goto(`${base}/admin/webhooks`)).status() === 403, "an Approver may not open the webhooks page");

    // Safe-mode from the treasury page: a new payout queues and nothing is broadcast.
    await admin.goto(`${base}/admin/treasury`);
    await admin.fill("#network-ethereum form.safe-mode input[name=reason]", "browser drill");
    await admin.click("#network-ethereum form.safe-mode button[type=submit]");
    await admin.waitForSelector("p.notice");
    check((await admin.textContent("#network-ethereum .safe-mode")).includes("ON"), "safe-mode is on");
    await shot(admin, "treasury-safe-mode");
    const [status, created] = await api("POST", "/v1/payouts", env.TRADER, { account: env.ACCOUNT, network: "ethereum", asset: "USDT", destination: env.DESTINATION, amount: "7" }, "browser-safe-mode-1");
    check(status === 202, `a payout is accepted in safe-mode (${status})`);
    await new Promise((r) => setTimeout(r, 2000));
    await admin.goto(`${base}/admin/payouts/${created.id}`);
    check((await admin.textContent("#payout-state")).trim() === "queued", "it stays queued: payouts stopped");
    check((await admin.locator("table.attempts tbody tr").count()) === 0, "nothing signed");
    await shot(admin, "payout-held-by-safe-mode");
    await admin.goto(`${base}/admin/treasury`);
    await admin.fill("#network-ethereum form.safe-mode input[name=reason]", "drill over");
    await admin.click("#network-ethereum form.safe-mode button[type=submit]");
    await admin.waitForSelector("p.notice");
    let state = "";
    for (let i = 0; i < 150 && state !== "confirmed"; i++) {
      await new Promise((r) => setTimeout(r, 200));
      await admin.goto(`${base}/admin/payouts/${created.id}`);
      state = (await admin.textContent("#payout-state")).trim();
    }
    check(state === "confirmed", "after leaving safe-mode it goes out and confirms");

    // Replay a dead-lettered webhook.
    await admin.goto(`${base}/admin/webhooks`);
    // The row of the deposit the test dead-lettered (an earlier deposit's may be listed too).
    const replayed = env.REPLAY_EVENT;
    const row = admin.locator("table.dead tbody tr", { has: admin.locator(`code:text-is("${replayed}")`) });
    check((await row.count()) === 1, "the dead-letter list shows the failed delivery");
    const endpoint = (await row.locator("form.replay").getAttribute("action")).split("/")[3];
    await row.locator("form.replay button[type=submit]").click();
    await admin.waitForSelector("p.notice");
    check((await admin.textContent("p.notice")).includes("redelivery"), "replay queued");
    // The receiver is healthy again: the replayed event itself must arrive.
    let delivered = false;
    for (let i = 0; i < 100 && !delivered; i++) {
      const [, d] = await api("GET", `/v1/webhooks/endpoints/${endpoint}/deliveries?state=delivered`, env.ADMIN);
      delivered = (d.items || []).some((x) => x.event_id === replayed);
      if (!delivered) { await new Promise((r) => setTimeout(r, 100)); }
    }
    check(delivered, `the replayed event ${replayed} was delivered`);
    await shot(admin, "webhook-replayed");

    // An EOD dry run from the trust page changes nothing and says what would settle.
    await operator.goto(`${base}/admin/trust`);
    await operator.click("form.dry-run button[type=submit]");
    await operator.waitForSelector("p.notice");
    check((await operator.textContent("p.notice")).includes("nothing changed"), "the dry run says nothing changed");
    await shot(operator, "eod-dry-run");
  } finally {
    await browser.close();
  }
}

main().catch((e) => { console.error(e); process.exit(1); });

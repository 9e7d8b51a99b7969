// Drives the console's terminal page in headless Chromium (Debian's `chromium`, through
// playwright-core from npm): signs in with a token, connects, types a command and waits for
// its output on the xterm.js screen. Prints one JSON line: the screen text and the status.
// Usage: node terminal.cjs PAGE_URL TOKEN COMMAND EXPECTED SCREENSHOT
"use strict";
const { chromium } = require("playwright-core");

async function main() {
  const [url, token, command, expected, screenshot] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1000, height: 600 } });
    await page.goto(url);
    await page.fill("#token", token);
    await page.click("#connect");
    await page.waitForFunction(() => document.getElementById("status").textContent.startsWith("connected"), null, { timeout: 20000 });
    await page.click("#terminal");
    await page.keyboard.type(command);
    await page.keyboard.press("Enter");
    await page.waitForFunction(
      (want) => (document.querySelector(".xterm-rows") || { textContent: "" }).textContent.includes(want),
      expected,
      { timeout: 20000 },
    );
    await page.screenshot({ path: screenshot });
    const text = await page.evaluate(() => document.querySelector(".xterm-rows").textContent);
    const status = await page.evaluate(() => document.getElementById("status").textContent);
    console.log(JSON.stringify({ text, status }));
  } finally {
    await browser.close();
  }
}

main().catch((e) => { console.error(e); process.exit(1); });

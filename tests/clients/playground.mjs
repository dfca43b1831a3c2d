// The playground in a real browser (Debian's chromium driven by playwright-core), against a
// live runbox at argv[2]. argv[3] is what to check: "page" (everything but rate limits) or
// "rate_limited" (a server whose run quota is 1). Prints one JSON line: the checks passed and
// the page's timings. A failed check saves a screenshot (argv[4] is the directory) and exits 1.
import { readFile } from 'node:fs/promises';
import { chromium } from 'playwright-core';

const [base, mode, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const passed = [];
const timings = {};
let current = null;

async function check(name, page, body) {
  current = { name, page };
  await body();
  passed.push(name);
}

async function fresh() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on('dialog', (dialog) => dialog.accept(page.nextAnswer ?? ''));
  await page.goto(base);
  await page.locator('body[data-ready="true"]').waitFor({ timeout: 15000 });
  return page;
}

const output = (page) => page.getByRole('region', { name: 'Output', exact: true });
const compileOutput = (page) => page.getByRole('region', { name: 'Compile output' });
const badge = (page) => page.getByRole('status').first();

async function program(page, language, code) {
  await page.getByLabel('Language', { exact: true }).selectOption(language);
  await page.locator('.cm-content').click();
  await page.keyboard.press('Control+A');
  await page.keyboard.insertText(code);
}

async function runAndSee(page, text, timeout = 30000) {
  await page.getByRole('button', { name: 'Run', exact: true }).click();
  await output(page).filter({ hasText: text }).waitFor({ timeout });
}

async function badgeSays(page, text, timeout = 30000) {
  await page.locator(`#badge:text-is("${text}")`).waitFor({ timeout });
}

try {
  if (mode === 'api_key') {
    const context = await browser.newContext();
    const page = await context.newPage();
    await check('with API keys on, the page asks for a key and then runs', page, async () => {
      await page.goto(base);
      await page.getByRole('alert').filter({ hasText: 'needs an API key' }).waitFor({ timeout: 15000 });
      await page.getByLabel('API key').fill(process.env.RUNBOX_TEST_KEY);
      await page.getByRole('button', { name: 'Use key', exact: true }).click();
      await page.locator('body[data-ready="true"]').waitFor({ timeout: 15000 });
      await runAndSee(page, 'Hello, World!');
      const kept = await page.evaluate(() => localStorage.getItem('runbox-api-key'));
      if (kept !== process.env.RUNBOX_TEST_KEY) throw new Error('the key is not kept in the browser');
    });
  } else if (mode === 'rate_limited') {
    const page = await fresh();
    await check('a rate-limited run says so, with when to try again', page, async () => {
      await program(page, 'python', "print('one')");
      await runAndSee(page, 'one');
      await page.getByRole('button', { name: 'Run', exact: true }).click();
      await page.getByRole('alert').filter({ hasText: /too fast\. Try again in \d+ seconds/ })
        .waitFor({ timeout: 15000 });
    });
  } else {
    const page = await fresh();
    await check('the page loads with its controls named', page, async () => {
      timings.first_contentful_paint_ms = await page.evaluate(
        () => performance.getEntriesByName('first-contentful-paint')[0]?.startTime);
      timings.interactive_ms = await page.evaluate(
        () => performance.getEntriesByName('runbox-ready')[0]?.startTime);
      for (const [role, name] of [['button', 'Run'], ['combobox', 'Language'],
        ['textbox', 'Standard input'], ['region', 'Output'], ['button', 'Share'],
        ['button', 'Open room'], ['tablist', 'Files']]) {
        await page.getByRole(role, { name, exact: true }).waitFor({ timeout: 5000 });
      }
      const options = await page.getByLabel('Language', { exact: true }).locator('option').count();
      if (options < 14) throw new Error(`${options} languages in the picker`);
    });
    await check('keyboard only: Tab reaches the picker and Run, Ctrl+Enter runs', page, async () => {
      await page.locator('body').click({ position: { x: 5, y: 5 } });
      const reached = [];
      for (let i = 0; i < 4; i += 1) {
        await page.keyboard.press('Tab');
        reached.push(await page.evaluate(() => document.activeElement?.id));
      }
      if (!reached.includes('language') || !reached.includes('run')) {
        throw new Error(`focus went ${reached.join(' → ')}`);
      }
    });
    await check('python runs and its output shows', page, async () => {
      await program(page, 'python', "print('hello from python')");
      await runAndSee(page, 'hello from python');
      await badgeSays(page, 'success');
    });
    await check('C runs', page, async () => {
      await program(page, 'c', '#include <stdio.h>\nint main(void) { printf("hello from C\\n"); return 0; }\n');
      await runAndSee(page, 'hello from C');
    });
    await check('Java runs (Ctrl+Enter)', page, async () => {
      await program(page, 'java', 'public class Main { public static void main(String[] a) { System.out.println("hello from Java"); } }\n');
      await page.keyboard.press('Control+Enter');
      await output(page).filter({ hasText: 'hello from Java' }).waitFor({ timeout: 60000 });
    });
    await check('the first line of a slow program shows before it ends', page, async () => {
      await program(page, 'python', "import time\nprint('first', flush=True)\ntime.sleep(3)\nprint('second')");
      await runAndSee(page, 'first', 10000);
      if ((await output(page).textContent()).includes('second')) throw new Error('not live');
      if ((await badge(page).textContent()) !== 'running') throw new Error('not running');
      await output(page).filter({ hasText: 'second' }).waitFor({ timeout: 10000 });
    });
    await check('a compile error shows in the compile pane with its badge', page, async () => {
      await program(page, 'c', 'int main(void) { return missing_name; }\n');
      await page.getByRole('button', { name: 'Run', exact: true }).click();
      await badgeSays(page, 'compile error');
      await compileOutput(page).filter({ hasText: 'missing_name' }).waitFor({ timeout: 5000 });
    });
    await check('stdin reaches the program, stderr is told apart', page, async () => {
      await program(page, 'python', 'import sys\nline = input()\nprint(line[::-1])\nprint("to stderr", file=sys.stderr)');
      await page.getByLabel('Standard input', { exact: true }).fill('abc');
      await runAndSee(page, 'cba');
      await page.locator('#output .stderr', { hasText: 'to stderr' }).waitFor({ timeout: 5000 });
      await page.getByLabel('Standard input', { exact: true }).fill('');
    });
    await check('a runaway loop is stopped', page, async () => {
      await program(page, 'python', 'while True: pass');
      await page.getByRole('button', { name: 'Run', exact: true }).click();
      await badgeSays(page, 'running', 10000);
      const started = Date.now();
      await page.getByRole('button', { name: 'Stop', exact: true }).click();
      await badgeSays(page, 'stopped', 3000);
      timings.stop_ms = Date.now() - started;
    });
    await check('an interactive run takes typed input', page, async () => {
      await program(page, 'python', "name = input('name? ')\nprint('hi', name)");
      await page.getByLabel('Interactive').check();
      await page.getByRole('button', { name: 'Run', exact: true }).click();
      const typed = page.getByLabel('Input to the running program');
      await typed.waitFor({ timeout: 10000 });
      await output(page).filter({ hasText: 'name?' }).waitFor({ timeout: 10000 });
      await typed.fill('Ada');
      await page.getByRole('button', { name: 'Send', exact: true }).click();
      await output(page).filter({ hasText: 'hi Ada' }).waitFor({ timeout: 10000 });
      await badgeSays(page, 'success');
      await page.getByLabel('Interactive').uncheck();
    });
    await check('a matplotlib plot shows inline and a CSV is offered for download', page, async () => {
      await program(page, 'python', "import matplotlib.pyplot as plt\nplt.figure(figsize=(3, 2))\nplt.plot([1, 3, 2])\nplt.savefig('plot.png', dpi=50)\nopen('data.csv', 'w').write('x,y\\n1,3\\n')\nprint('drawn')");
      await runAndSee(page, 'drawn', 30000);
      const image = page.getByRole('img', { name: 'plot.png' });
      await image.waitFor({ timeout: 10000 });
      const size = await image.evaluate(async (img) => {
        await img.decode();
        return [img.naturalWidth, img.naturalHeight];
      });
      if (size[0] !== 150 || size[1] !== 100) throw new Error(`the plot is ${size.join('x')}`);
      const download = page.getByRole('link', { name: 'data.csv' });
      await download.waitFor({ timeout: 5000 });
      if ((await download.getAttribute('download')) !== 'data.csv') throw new Error('no download name');
      const [saved] = await Promise.all([page.waitForEvent('download'), download.click()]);
      const text = await readFile(await saved.path(), 'utf8');
      if (text !== 'x,y\n1,3\n') throw new Error(`the CSV reads ${JSON.stringify(text)}`);
    });
    let link;
    await check('a share link restores the same files in a fresh page', page, async () => {
      await program(page, 'python', "from helper import greet\nprint(greet())");
      page.nextAnswer = 'helper.py';
      await page.getByRole('button', { name: 'Add file', exact: true }).click();
      await page.getByRole('tab', { name: 'helper.py' }).waitFor({ timeout: 5000 });
      await page.locator('.cm-content').click();
      await page.keyboard.insertText("def greet():\n    return 'shared and restored'");
      await page.getByLabel('Standard input', { exact: true }).fill('kept stdin');
      await page.getByRole('button', { name: 'Share', exact: true }).click();
      await page.waitForFunction(() => location.hash.startsWith('#code='));
      link = page.url();
      const other = await browser.newContext();
      const restored = await other.newPage();
      await restored.goto(link);
      await restored.locator('body[data-ready="true"]').waitFor({ timeout: 15000 });
      await restored.getByRole('tab', { name: 'helper.py' }).waitFor({ timeout: 5000 });
      const stdin = await restored.getByLabel('Standard input', { exact: true }).inputValue();
      if (stdin !== 'kept stdin') throw new Error(`stdin ${stdin}`);
      await runAndSee(restored, 'shared and restored');
      await other.close();
    });
    await check('phone width and the dark theme: no sideways scroll, readable contrast', page, async () => {
      const context = await browser.newContext({ viewport: { width: 390, height: 844 }, colorScheme: 'dark' });
      const phone = await context.newPage();
      await phone.goto(base);
      await phone.locator('body[data-ready="true"]').waitFor({ timeout: 15000 });
      const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      if (overflow > 0) throw new Error(`${overflow} px wider than the screen`);
      await phone.getByRole('button', { name: 'Run', exact: true }).scrollIntoViewIfNeeded();
      await phone.getByRole('button', { name: 'Run', exact: true }).click();
      await phone.getByRole('region', { name: 'Output', exact: true })
        .filter({ hasText: 'Hello, World!' }).waitFor({ timeout: 30000 });
      // WCAG contrast of text against its background, for the main kinds of text.
      const ratios = await phone.evaluate(() => {
        const rgb = (c) => c.match(/[\d.]+/g).slice(0, 3).map(Number);
        const lum = ([r, g, b]) => {
          const f = (v) => { const s = v / 255; return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4; };
          return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
        };
        const background = (el) => {
          for (let e = el; e; e = e.parentElement) {
            const c = getComputedStyle(e).backgroundColor;
            if (!c.startsWith('rgba(0, 0, 0, 0)') && c !== 'transparent') return c;
          }
          return 'rgb(255, 255, 255)';
        };
        return ['h1', '#run', '#badge', '#output', 'label[for="stdin"]', '#usage'].map((selector) => {
          const el = document.querySelector(selector);
          const [a, b] = [lum(rgb(getComputedStyle(el).color)), lum(rgb(background(el)))];
          return [selector, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)];
        });
      });
      for (const [selector, ratio] of ratios) {
        if (ratio < 4.5) throw new Error(`${selector}: contrast ${ratio.toFixed(2)}`);
      }
      await context.close();
    });
    const first = await fresh();
    await check('a room is shared by two browsers: keystrokes, scrollback, presence', first, async () => {
      await first.getByRole('button', { name: 'Open room', exact: true }).click();
      const terminal = first.getByRole('region', { name: 'Terminal' });
      await terminal.locator('.xterm-rows').filter({ hasText: '>>>' }).waitFor({ timeout: 20000 });
      await first.getByRole('status').filter({ hasText: '1 person in this room' }).waitFor({ timeout: 5000 });
      await terminal.click();
      await first.keyboard.type('print(6*7)');
      await first.keyboard.press('Enter');
      await terminal.locator('.xterm-rows').filter({ hasText: '42' }).waitFor({ timeout: 10000 });
      const invite = await first.getByLabel('Invite link').inputValue();
      const context = await browser.newContext();
      const second = await context.newPage();
      await second.goto(invite);
      const theirs = second.getByRole('region', { name: 'Terminal' });
      // The late joiner sees what was typed before it came.
      await theirs.locator('.xterm-rows').filter({ hasText: 'print(6*7)' }).waitFor({ timeout: 15000 });
      for (const p of [first, second]) {
        await p.getByRole('status').filter({ hasText: '2 people in this room' }).waitFor({ timeout: 5000 });
      }
      await theirs.click();
      await second.keyboard.type('print(5*5)');
      await second.keyboard.press('Enter');
      await terminal.locator('.xterm-rows').filter({ hasText: '25' }).waitFor({ timeout: 10000 });
      // The room's language, switched by its REPL's start frame: everyone is in bash now.
      await first.getByLabel('Room language').selectOption('bash');
      await first.getByRole('button', { name: 'Switch language', exact: true }).click();
      await theirs.locator('.xterm-rows').filter({ hasText: '$' }).waitFor({ timeout: 20000 });
      await second.waitForTimeout(500);
      await theirs.click();
      await second.keyboard.type('echo "now in $0"');
      await second.keyboard.press('Enter');
      await terminal.locator('.xterm-rows').filter({ hasText: 'now in bash' }).waitFor({ timeout: 10000 });
      await first.getByRole('button', { name: 'Close room', exact: true }).click();
      await second.getByRole('alert').filter({ hasText: 'no longer exists' }).waitFor({ timeout: 10000 });
      await context.close();
    });
  }
  console.log(JSON.stringify({ passed, timings }));
  await browser.close();
} catch (error) {
  const shot = `${shots || '/tmp'}/playground-${Date.now()}.png`;
  await current?.page?.screenshot({ path: shot, fullPage: true }).catch(() => {});
  console.error(`FAILED: ${current?.name}: ${error.message}\nscreenshot: ${shot}`);
  console.log(JSON.stringify({ passed, failed: current?.name, error: error.message, screenshot: shot }));
  await browser.close();
  process.exit(1);
}

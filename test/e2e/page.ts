/**
 * JupyterLab in Chromium for the end-to-end tests: the lab page of a running server, restored, and
 * a notebook opened in it with its kernel idle. The waits are for events (the app's `restored`
 * promise, the kernel's status); their time limits only guard against a hang.
 */
import type { Page } from 'playwright-core';
import { launch, type Browser } from '../extension/chromium.js';
import type { LabServer } from './lab.js';

// The page's globals, in functions that run in the browser.
declare const window: any;

/** Chromium on the server's lab page, once JupyterLab has restored its layout. */
export async function openLab(server: LabServer): Promise<{ browser: Browser; page: Page }> {
  const browser = await launch({ width: 1400, height: 1000 });
  const page = browser.page;
  await page.goto(`${server.url}/lab?reset&token=${server.token}`);
  await page.waitForFunction(() => window.jupyterapp, null, { timeout: 60_000 });
  await page.evaluate(() => window.jupyterapp.restored);
  return { browser, page };
}

/** Opens `file` (relative to the server's root) as a notebook and waits until its kernel is idle. */
export async function openNotebook(page: Page, file: string): Promise<void> {
  await page.evaluate(async (f: string) => {
    const w = await window.jupyterapp.commands.execute('docmanager:open', { path: f, factory: 'Notebook' });
    await w.context.ready;
    await w.sessionContext.ready;
  }, file);
  await page.waitForFunction(
    () => window.jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel?.status === 'idle',
    null,
    { timeout: 120_000 },
  );
}

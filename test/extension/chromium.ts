/**
 * Headless Chromium (Debian's /usr/bin/chromium) through playwright-core, with the flags that work
 * in containers without a GPU or a sandbox; collects console errors and page errors so tests can
 * assert a clean page.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';

export const CHROMIUM = process.env.VQALAB_CHROMIUM ?? '/usr/bin/chromium';
export const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
];

/** Where screenshots go (CI keeps test-artifacts/). */
export function artifactPath(name: string): string {
  const dir = path.resolve(import.meta.dirname, '../../../test-artifacts');
  mkdirSync(dir, { recursive: true });
  return path.join(dir, name);
}

export interface Browser {
  context: BrowserContext;
  page: Page;
  /** console.error/warning lines, page errors, failed requests and HTTP errors seen so far. */
  problems: string[];
  close(): Promise<void>;
}

export async function launch(viewport = { width: 1300, height: 900 }): Promise<Browser> {
  const profile = mkdtempSync(path.join(tmpdir(), 'vqa-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport,
    args: ARGS,
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const problems: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') problems.push(`console.${m.type()}: ${m.text().slice(0, 400)}`);
  });
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('requestfailed', (r) => problems.push(`requestfailed ${r.url().slice(0, 200)} ${r.failure()?.errorText}`));
  page.on('response', (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()} ${r.url().slice(0, 200)}`);
  });
  return {
    context,
    page,
    problems,
    async close() {
      await context.close().catch(() => undefined);
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Headless Debian Chromium for report tests: a fresh profile, no network, console errors collected. */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';

export interface OpenedPage {
  page: Page;
  /** console errors and uncaught page errors */
  errors: string[];
  /** requests to anything but the file itself, data: and blob: URLs */
  requests: string[];
}

export class Browser {
  private constructor(
    private readonly ctx: BrowserContext,
    private readonly profile: string,
  ) {}

  static async launch(): Promise<Browser> {
    const profile = mkdtempSync(path.join(os.tmpdir(), 'vq-chromium-'));
    const ctx = await chromium.launchPersistentContext(profile, {
      executablePath: '/usr/bin/chromium',
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ], // the fresh profile dir is passed as --user-data-dir by playwright
      viewport: { width: 1200, height: 900 },
    });
    return new Browser(ctx, profile);
  }

  async open(file: string): Promise<OpenedPage> {
    const page = await this.ctx.newPage();
    const errors: string[] = [];
    const requests: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('request', (r) => {
      const url = r.url();
      if (url !== `file://${file}` && !url.startsWith('data:') && !url.startsWith('blob:')) requests.push(url);
    });
    await page.goto(`file://${file}`);
    await page.waitForSelector('html[data-hydrated="true"]', { timeout: 30_000 });
    return { page, errors, requests };
  }

  async close(): Promise<void> {
    await this.ctx.close();
    rmSync(this.profile, { recursive: true, force: true });
  }
}

/** docs/api.md lists every export of the package entry (src/index.ts); each capability is exported once. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as vqalab from '../../src/index.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const page = readFileSync(path.join(root, 'docs', 'api.md'), 'utf8');
const entry = readFileSync(path.join(root, 'src', 'index.ts'), 'utf8');
const api = vqalab as unknown as Record<string, unknown>;
const top = Object.keys(api);
const namespaces = top.filter((n) => typeof api[n] === 'object' && api[n] !== null);

/** The section of the page for one namespace: from its heading to the next. */
function section(ns: string): string {
  const start = page.indexOf(`### \`${ns}\``);
  if (start < 0) return '';
  const next = page.indexOf('\n### ', start + 1);
  return page.slice(start, next < 0 ? undefined : next);
}

test('every top-level export is listed on docs/api.md, and the top level holds 20 to 30 names', () => {
  const missing = top.filter((n) => !page.includes(`\`${n}\``));
  assert.deepEqual(missing, [], `exported by src/index.ts but not listed in docs/api.md: ${missing.join(', ')}`);
  assert.ok(
    top.length >= 20 && top.length <= 30,
    `the top level holds ${top.length} names (${top.join(', ')}); keep it to 20–30 everyday names`,
  );
  // Types are exported in the namespaces beside their values, not at the top level.
  assert.doesNotMatch(
    entry,
    /^export (type |\{[^}]*\btype )/m,
    'src/index.ts exports a type at the top level; export it from its folder namespace',
  );
});

test('every namespace is named after its folder and each of its exports is listed in its section of docs/api.md', () => {
  for (const ns of namespaces) {
    assert.match(
      entry,
      new RegExp(`^export \\* as ${ns} from '\\./${ns}/`, 'm'),
      `namespace ${ns} does not come from src/${ns}/`,
    );
    const text = section(ns);
    assert.notEqual(text, '', `docs/api.md has no section "### \`${ns}\`"`);
    const missing = Object.keys(api[ns] as object).filter((n) => !text.includes(`\`${n}\``));
    assert.deepEqual(
      missing,
      [],
      `exported by vqalab.${ns} but not listed under ${ns} in docs/api.md: ${missing.join(', ')}`,
    );
  }
});

test('each capability is exported once: no value is both at the top level and in a namespace, or in two namespaces', () => {
  const where = new Map<unknown, string>();
  const twice: string[] = [];
  const visit = (value: unknown, name: string) => {
    if (typeof value !== 'function') return;
    const before = where.get(value);
    if (before !== undefined) twice.push(`${before} = ${name}`);
    else where.set(value, name);
  };
  for (const n of top) visit(api[n], n);
  for (const ns of namespaces) for (const [n, v] of Object.entries(api[ns] as object)) visit(v, `${ns}.${n}`);
  assert.deepEqual(twice, [], `exported twice: ${twice.join('; ')}`);
});

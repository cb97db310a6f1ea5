import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { declarationSnapshot, rewriteDeclarations } from './declarations.js';
import { preludeCell, preludeNames } from './preload.js';
import { createConverter, typescript } from './tslab.js';

test('third-party types become any; relative and node: imports stay', () => {
  const src = [
    '/// <reference types="node" resolution-mode="require"/>',
    "import * as arrow from 'apache-arrow';",
    "import type { Readable } from 'node:stream';",
    "import type { VqaSample } from './types.js';",
    "export { helper } from '../util/helper.js';",
    'export declare function f(t: arrow.Table, d: arrow.Data<arrow.Utf8>, s: VqaSample): Readable;',
    "export declare function g(): Promise<typeof arrow>; export type X = import('protobufjs').Root;",
  ].join('\n');
  const out = rewriteDeclarations(typescript(), 'x.d.ts', src);
  assert.deepEqual(out.external, ['apache-arrow', 'protobufjs']);
  assert.deepEqual(out.relative, ['./types.js', '../util/helper.js']);
  assert.doesNotMatch(out.text, /apache-arrow|protobufjs|arrow\.|reference types/);
  assert.match(out.text, /f\(t: any, d: any, s: VqaSample\): Readable/);
  assert.match(out.text, /g\(\): Promise<any>; export type X = any;/);
  assert.match(out.text, /from 'node:stream'/);
  assert.throws(
    () =>
      rewriteDeclarations(
        typescript(),
        'y.d.ts',
        "import * as arrow from 'apache-arrow';\nexport declare class T extends arrow.Table {}",
      ),
    /y\.d\.ts:2: a heritage clause naming a third-party type/,
  );
  assert.throws(
    () => rewriteDeclarations(typescript(), 'z.d.ts', "export * from 'apache-arrow';"),
    /z\.d\.ts:1: a re-export of the package "apache-arrow"/,
  );
});

test('the copy is made once, found up to date, and made again when a source file changes', () => {
  const root = mkdtempSync(path.join(os.tmpdir(), 'vqalab-decl-test-'));
  try {
    const dist = path.join(root, 'dist');
    mkdirSync(path.join(dist, 'kernel'), { recursive: true });
    mkdirSync(path.join(dist, 'src'), { recursive: true });
    writeFileSync(path.join(dist, 'kernel', 'prelude.d.ts'), "export * as lib from '../src/index.js';\n");
    writeFileSync(path.join(dist, 'src', 'index.d.ts'), "export * from './a.js';\n");
    writeFileSync(
      path.join(dist, 'src', 'a.d.ts'),
      "import * as arrow from 'apache-arrow';\nexport declare function rows(t: arrow.Table): number;\n",
    );
    writeFileSync(path.join(dist, 'src', 'unused.d.ts'), 'export declare const x: number;\n');
    const dir = path.join(root, 'copy');
    const first = declarationSnapshot({ distDir: dist, dir });
    assert.equal(first.built, true);
    assert.equal(first.files, 3);
    assert.deepEqual(first.external, ['apache-arrow']);
    assert.equal(first.preludeModule, path.join(dir, 'kernel', 'prelude.js'));
    assert.equal(
      readFileSync(path.join(dir, 'src', 'a.d.ts'), 'utf8').trim(),
      'export declare function rows(t: any): number;',
    );
    assert.equal(declarationSnapshot({ distDir: dist, dir }).built, false);
    writeFileSync(path.join(dist, 'src', 'a.d.ts'), 'export declare function rows(t: string[]): number;\n');
    const again = declarationSnapshot({ distDir: dist, dir });
    assert.equal(again.built, true);
    assert.deepEqual(again.external, []);
    assert.match(readFileSync(path.join(dir, 'src', 'a.d.ts'), 'utf8'), /rows\(t: string\[\]\)/);
    writeFileSync(
      path.join(dist, 'src', 'a.d.ts'),
      "import * as arrow from 'apache-arrow';\nexport declare class T extends arrow.Table {}\n",
    );
    assert.throws(() => declarationSnapshot({ distDir: dist, dir }), /a\.d\.ts:2: a heritage clause/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("the runtime's copy reads no third-party declarations and types cells as the original does", () => {
  const copy = declarationSnapshot();
  const cell = preludeCell(preludeNames(), copy.preludeModule);
  const ts = typescript();
  const converter = createConverter();
  const read: string[] = [];
  const readFile = ts.sys.readFile;
  ts.sys.readFile = (file, encoding) => {
    read.push(file);
    return readFile.call(ts.sys, file, encoding);
  };
  try {
    const out = converter.convert('', cell.source);
    assert.deepEqual(out.diagnostics, []);
    assert.equal(out.declOutput, cell.declaration);
    const next = converter.convert(
      cell.declaration,
      [
        'const t: typeof Trainer = Trainer;',
        'const n: string = vqalab.vqaAccuracy().name;',
        // A wrong type is still an error through the copy (an unused expect-error directive would be reported).
        '// @ts-expect-error',
        'const wrong: number = vqalab.vqaAccuracy().name;',
      ].join('\n'),
    );
    assert.deepEqual(next.diagnostics, []);
    const thirdParty = read.filter((f) => /node_modules\/(apache-arrow|protobufjs|onnxruntime|flatbuffers)\//.test(f));
    assert.deepEqual(thirdParty, []);
    assert.ok(
      read.some((f) => f.startsWith(copy.dir)),
      'the copy was read',
    );
    // A cell that imports apache-arrow itself gets its types, and hands its table to the runtime.
    const arrowCell = converter.convert(
      cell.declaration,
      'import * as arrow from "apache-arrow";\nconst table = arrow.tableFromArrays({ question: ["q"] });\nconst rows: number = table.numRows;\nconst make = () => vqalab.VqaDataset.fromArrow(table);',
    );
    assert.deepEqual(arrowCell.diagnostics, []);
  } finally {
    ts.sys.readFile = readFile;
    converter.close();
  }
});

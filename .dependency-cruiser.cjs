/**
 * The layer rule of docs/architecture.md, checked by dependency-cruiser on every `npm test`
 * (`npm run depcheck`). A module may import its own folder and any folder of a lower layer; an
 * import of a higher layer, or of a sibling folder of the same layer, fails; so does any cycle of
 * modules. The order is LAYERS below (one line per layer, lowest first); change it here and in
 * docs/architecture.md together.
 */
const LAYERS = [
  ['util'],
  ['jupyter', 'engine'],
  ['vision', 'text', 'eval'],
  ['data'],
  ['model', 'reward', 'parity'],
  ['rollout'],
  ['grpo', 'export'],
  ['distributed'],
  ['display'],
  ['report'],
  ['serve'],
  ['gateway'],
  ['cli'],
  ['index'],
  ['kernel'],
];

/** Where a layer name lives: src/<name>/, except the package entry (src/index.ts) and kernel/. */
const where = (name) =>
  name === 'index' ? '^src/index\\.ts$' : name === 'kernel' ? '^kernel/' : `^src/${name}/`;

/**
 * Imports that break the order today and are being moved by another branch; each names its file.
 * Remove a line when its import is gone (the check fails on nothing, so a stale line only hides).
 */
const KNOWN_EXCEPTIONS = [
];
const fileRe = (file) => `^${file.replace(/[.]/g, '\\.')}$`;

const forbidden = [];
LAYERS.forEach((layer, level) => {
  for (const name of layer) {
    const targets = [...LAYERS.slice(level + 1).flat(), ...layer.filter((n) => n !== name)];
    if (targets.length === 0) continue;
    const rule = (suffix, from, allowed) => ({
      name: `layer-${name}${suffix}`,
      comment: `${name} (layer ${level}) may import only lower layers (docs/architecture.md): not ${targets.join(', ')}`,
      severity: 'error',
      from,
      to: { path: targets.filter((t) => t !== allowed).map(where) },
    });
    const exceptions = KNOWN_EXCEPTIONS.filter((e) => e.layer === name);
    forbidden.push(rule('', { path: where(name), pathNot: exceptions.map((e) => fileRe(e.file)) }));
    // A known exception may reach only the one folder it names; everything else upward still fails.
    for (const e of exceptions) forbidden.push(rule('-known-exception', { path: fileRe(e.file) }, e.may));
  }
});
forbidden.push({
  name: 'no-circular',
  comment: 'modules import each other in a cycle; move the shared part down a layer',
  severity: 'error',
  from: {},
  to: { circular: true, viaOnly: { dependencyTypesNot: ['type-only'] } },
});

module.exports = {
  forbidden,
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|node_modules|native|extension|test|bench|examples)/|\\.test\\.ts$' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};

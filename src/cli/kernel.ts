/** `vqalab kernel install | list | remove`: the "TypeScript (vqalab)" Jupyter kernelspec. */
import {
  installKernelspec,
  jupyterDataDirs,
  KERNEL_NAME,
  kernelJson,
  listKernelspecs,
  removeKernelspec,
  type Location,
} from '../jupyter/kernelspec.js';
import { dispatchSubcommand, type Command } from './command.js';
import { UsageError } from '../util/errors.js';

const LOCATION_HELP = `Where (one of; default: --user, or the system directory when run as root):
  --user          the per-user Jupyter data directory (~/.local/share/jupyter/kernels)
  --prefix P      P/share/jupyter/kernels (a virtualenv, a conda env, a test's temp dir)
  --sys-prefix    the sys.prefix of the Python running Jupyter (see --python)
  --python PY     that Python (default: python3 on PATH)
  --name NAME     the kernelspec's name (default: ${KERNEL_NAME})
`;

function parseLocation(argv: string[], extra: string[] = []): { loc: Location; name: string; flags: Set<string> } {
  const loc: Location = {};
  let name = KERNEL_NAME;
  const flags = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined || v.startsWith('--')) throw new UsageError(`${a} needs a value`);
      return v;
    };
    if (a === '--user') loc.user = true;
    else if (a === '--sys-prefix') loc.sysPrefix = true;
    else if (a === '--prefix') loc.prefix = value();
    else if (a.startsWith('--prefix=')) loc.prefix = a.slice('--prefix='.length);
    else if (a === '--python') loc.python = value();
    else if (a === '--name') name = value();
    else if (extra.includes(a)) flags.add(a);
    else throw new UsageError(`unknown option "${a}"`);
  }
  if ([loc.user, loc.prefix !== undefined, loc.sysPrefix].filter(Boolean).length > 1) {
    throw new UsageError('choose one of --user, --prefix and --sys-prefix');
  }
  return { loc, name, flags };
}

const install: Command = {
  name: 'install',
  summary: 'write the "TypeScript (vqalab)" kernelspec where Jupyter finds it',
  usage: `Usage: vqalab kernel install [--user | --prefix P | --sys-prefix] [--python PY] [--name NAME]

Writes the kernelspec (kernel.json) whose argv runs this package's kernel launcher with this
Node.js (absolute paths, so notebooks anywhere use this install). Reinstalling replaces it.

${LOCATION_HELP}`,
  async run(argv) {
    const { loc, name } = parseLocation(argv);
    const dir = await installKernelspec(loc, name);
    process.stdout.write(`installed kernelspec "${name}" in ${dir}\n  argv: ${kernelJson().argv.join(' ')}\n`);
    return 0;
  },
};

const list: Command = {
  name: 'list',
  summary: 'list the vqalab kernelspecs Jupyter can see',
  usage: `Usage: vqalab kernel list [--json] [--python PY]

Lists the vqalab kernelspecs on Jupyter's search path (JUPYTER_PATH, the user's data directory,
the Python environment's, the system's), in the order Jupyter searches, marking the ones that
run this package, ones whose launcher no longer exists, and ones shadowed by an earlier one.
`,
  async run(argv) {
    const { loc, flags } = parseLocation(argv, ['--json']);
    const found = listKernelspecs(jupyterDataDirs({ python: loc.python ?? 'python3' }));
    if (flags.has('--json')) {
      process.stdout.write(
        `${JSON.stringify(
          found.map(({ spec: _spec, ...f }) => f),
          null,
          2,
        )}\n`,
      );
      return 0;
    }
    if (found.length === 0) {
      process.stdout.write('no vqalab kernelspec found; run "vqalab kernel install"\n');
      return 1;
    }
    for (const f of found) {
      const notes = [
        f.thisPackage ? 'this package' : 'another install',
        ...(f.launcherExists ? [] : ['launcher missing: reinstall']),
        ...(f.shadowed ? ['shadowed by an earlier one'] : []),
      ];
      process.stdout.write(`${f.name}\t${f.dir}\t(${notes.join(', ')})\n`);
    }
    return 0;
  },
};

const remove: Command = {
  name: 'remove',
  summary: 'remove the vqalab kernelspec from a location',
  usage: `Usage: vqalab kernel remove [--user | --prefix P | --sys-prefix] [--python PY] [--name NAME]

Removes the kernelspec from the location (the same default as install). Refuses to remove a
kernelspec that is not a vqalab one.

${LOCATION_HELP}`,
  async run(argv) {
    const { loc, name } = parseLocation(argv);
    const dir = removeKernelspec(loc, name);
    if (dir === null) {
      process.stderr.write(`no kernelspec "${name}" there; "vqalab kernel list" shows where they are\n`);
      return 1;
    }
    process.stdout.write(`removed ${dir}\n`);
    return 0;
  },
};

const subcommands = [install, list, remove];

const usage = `Usage: vqalab kernel <command> [options]

The "TypeScript (vqalab)" Jupyter kernel: tslab with the vqalab runtime preloaded.

Commands:
${subcommands.map((c) => `  ${c.name.padEnd(8)}  ${c.summary}`).join('\n')}

Run "vqalab kernel <command> --help" for its options.
`;

export const kernelCommand: Command = {
  name: 'kernel',
  summary: 'install, list or remove the "TypeScript (vqalab)" Jupyter kernel',
  usage,
  run: (argv) => dispatchSubcommand('kernel', usage, subcommands, argv),
};

/**
 * `vqalab lab install|uninstall|path`: put the prebuilt (federated) JupyterLab 4 extension where
 * JupyterLab looks for labextensions, so a user's JupyterLab finds it at its next start without a
 * rebuild (the same layout `pip install` of a prebuilt extension produces).
 */
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { userDataDir } from '../jupyter/kernelspec.js';
import { withAtomicOutput } from '../util/fs.js';
import { packageRoot } from '../util/package.js';
import { dispatchSubcommand, type Command } from './command.js';
import { UsageError } from '../util/errors.js';

export const EXTENSION_NAME = 'vqalab-jupyterlab';

const FLAGS = `Where (one of; default --user):
  --user            the user's Jupyter data folder ($JUPYTER_DATA_DIR, else ~/.local/share/jupyter)
  --sys-prefix      the Python environment of --python (sys.prefix/share/jupyter)
  --prefix DIR      DIR/share/jupyter
  --python PY       the Python whose sys.prefix --sys-prefix uses (default python3)
`;

const USAGE = `Usage: vqalab lab <command> [options]

The JupyterLab 4 extension that renders vqalab's widgets (sample cards, groups, reward tables,
live metrics dashboards, dataset browser). It ships prebuilt: installing copies it, no rebuild.

Commands:
  install     copy the prebuilt extension into a labextensions folder
  uninstall   remove it from that folder
  path        print the folder install would write

${FLAGS}`;

/** Jupyter's user data folder, as jupyter_core computes it (one implementation, in src/jupyter/kernelspec.ts). */
export { userDataDir as jupyterDataDir };

export interface Where {
  mode: 'user' | 'sys-prefix' | 'prefix';
  prefix?: string;
  python: string;
}

export function parseWhere(argv: string[]): Where {
  const where: Where = { mode: 'user', python: 'python3' };
  let chosen: string | undefined;
  const choose = (flag: string) => {
    if (chosen && chosen !== flag) throw new UsageError(`${chosen} and ${flag} exclude each other; give one`);
    chosen = flag;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--user') {
      choose(a);
      where.mode = 'user';
    } else if (a === '--sys-prefix') {
      choose(a);
      where.mode = 'sys-prefix';
    } else if (a === '--prefix' || a.startsWith('--prefix=')) {
      choose('--prefix');
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
      if (!v) throw new UsageError('--prefix needs a folder');
      where.mode = 'prefix';
      where.prefix = path.resolve(v);
    } else if (a === '--python' || a.startsWith('--python=')) {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
      if (!v) throw new UsageError('--python needs an executable');
      where.python = v;
    } else throw new UsageError(`unknown option ${a}; run "vqalab lab --help"`);
  }
  return where;
}

/** The labextensions folder for `where`. */
export function labextensionsDir(where: Where): string {
  if (where.mode === 'user') return path.join(userDataDir(), 'labextensions');
  if (where.mode === 'prefix') return path.join(where.prefix!, 'share', 'jupyter', 'labextensions');
  let prefix: string;
  try {
    prefix = execFileSync(where.python, ['-c', 'import sys; print(sys.prefix)'], { encoding: 'utf8' }).trim();
  } catch (err) {
    throw new UsageError(
      `--sys-prefix: cannot ask ${where.python} for sys.prefix (${(err as Error).message.split('\n')[0]}); pass --python or use --prefix`,
    );
  }
  return path.join(prefix, 'share', 'jupyter', 'labextensions');
}

/** The prebuilt extension in this package, checked: its package.json names a remote entry that exists. */
export function prebuiltExtension(root = packageRoot()): { dir: string; version: string; load: string } {
  const dir = path.join(root, 'extension', 'labextension');
  const pkgPath = path.join(dir, 'package.json');
  const hint = 'the package is incomplete; in a source checkout run "npm run lab:setup && npm run build:lab"';
  if (!existsSync(pkgPath))
    throw new UsageError(`the prebuilt JupyterLab extension is missing (${pkgPath}): ${hint}`, 1);
  const pkg = JSON.parse(readFileSync(pkgPath, 'utf8')) as {
    version: string;
    jupyterlab?: { _build?: { load?: string } };
  };
  const load = pkg.jupyterlab?._build?.load;
  if (!load || !existsSync(path.join(dir, load))) {
    throw new UsageError(
      `the prebuilt JupyterLab extension in ${dir} has no remote entry (${load ?? 'jupyterlab._build.load unset'}): ${hint}`,
      1,
    );
  }
  return { dir, version: pkg.version, load };
}

function folderSize(dir: string): { files: number; bytes: number } {
  let files = 0,
    bytes = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) {
      const s = folderSize(p);
      files += s.files;
      bytes += s.bytes;
    } else {
      files++;
      bytes += statSync(p).size;
    }
  }
  return { files, bytes };
}

/** Copy the prebuilt extension into `<labextensions>/vqalab-jupyterlab` (atomically replacing an older copy). */
export async function installExtension(
  labextensions: string,
  root = packageRoot(),
): Promise<{ target: string; version: string; files: number; bytes: number }> {
  const src = prebuiltExtension(root);
  const target = path.join(labextensions, EXTENSION_NAME);
  mkdirSync(labextensions, { recursive: true });
  await withAtomicOutput(target, async (tmp) => {
    cpSync(src.dir, tmp, { recursive: true });
    // JupyterLab's extension manager shows how the extension was installed and how to remove it.
    writeFileSync(
      path.join(tmp, 'install.json'),
      `${JSON.stringify({ packageManager: 'npm', packageName: 'vqalab', uninstallInstructions: 'Run "vqalab lab uninstall" with the same --user/--sys-prefix/--prefix option' }, null, 2)}\n`,
    );
  });
  return { target, version: src.version, ...folderSize(target) };
}

const install: Command = {
  name: 'install',
  summary: 'copy the prebuilt extension into a labextensions folder',
  usage: `Usage: vqalab lab install [--user | --sys-prefix | --prefix DIR] [--python PY]\n\nCopies the prebuilt JupyterLab 4 extension; restart JupyterLab to load it (no rebuild).\n\n${FLAGS}`,
  async run(argv) {
    const dir = labextensionsDir(parseWhere(argv));
    const r = await installExtension(dir);
    process.stdout.write(
      `installed ${EXTENSION_NAME} ${r.version} into ${r.target} (${r.files} files, ${(r.bytes / 1e6).toFixed(1)} MB); restart JupyterLab to load it\n`,
    );
    return 0;
  },
};

const uninstall: Command = {
  name: 'uninstall',
  summary: 'remove the extension from that folder',
  usage: `Usage: vqalab lab uninstall [--user | --sys-prefix | --prefix DIR] [--python PY]\n\n${FLAGS}`,
  async run(argv) {
    const target = path.join(labextensionsDir(parseWhere(argv)), EXTENSION_NAME);
    if (!existsSync(target)) {
      process.stderr.write(`${EXTENSION_NAME} is not installed in ${path.dirname(target)}\n`);
      return 1;
    }
    rmSync(target, { recursive: true, force: true });
    process.stdout.write(`removed ${target}\n`);
    return 0;
  },
};

const where: Command = {
  name: 'path',
  summary: 'print the folder install would write',
  usage: `Usage: vqalab lab path [--user | --sys-prefix | --prefix DIR] [--python PY]\n\n${FLAGS}`,
  async run(argv) {
    process.stdout.write(`${path.join(labextensionsDir(parseWhere(argv)), EXTENSION_NAME)}\n`);
    return 0;
  },
};

export const labCommand: Command = {
  name: 'lab',
  summary: 'install the JupyterLab 4 extension (prebuilt renderers for vqalab widgets)',
  usage: USAGE,
  run: (argv) => dispatchSubcommand('lab', USAGE, [install, uninstall, where], argv),
};

/** The kernel_info_reply: who we are, which TypeScript, how front ends should edit our cells. */
import { KERNEL_NAME } from '../src/jupyter/kernelspec.js';
import { PROTOCOL_VERSION } from '../src/jupyter/message.js';
import { vqalabVersion } from '../src/util/package.js';
import { tslabVersion, typescript } from './tslab.js';

export interface KernelInfo {
  status: 'ok';
  protocol_version: string;
  implementation: string;
  implementation_version: string;
  language_info: {
    name: string;
    /** The TypeScript version cells are compiled with. */
    version: string;
    mimetype: string;
    file_extension: string;
    pygments_lexer: string;
    codemirror_mode: Record<string, unknown>;
    nbconvert_exporter: string;
  };
  banner: string;
  help_links: { text: string; url: string }[];
  debugger: boolean;
}

export function kernelInfo(): KernelInfo {
  const version = vqalabVersion();
  const ts = typescript().version;
  return {
    status: 'ok',
    protocol_version: PROTOCOL_VERSION,
    implementation: KERNEL_NAME,
    implementation_version: version,
    language_info: {
      name: 'typescript',
      version: ts,
      mimetype: 'text/typescript',
      file_extension: '.ts',
      pygments_lexer: 'typescript',
      // JupyterLab reads `mode`; classic Notebook needs `name` + `typescript` for TS highlighting.
      codemirror_mode: { mode: 'typescript', name: 'javascript', typescript: true },
      nbconvert_exporter: 'script',
    },
    banner: `vqalab ${version}: TypeScript ${ts} on Node.js ${process.version.slice(1)} (tslab ${tslabVersion}); the vqalab runtime is preloaded`,
    help_links: [],
    debugger: false,
  };
}

/**
 * Connection files: the five ports and the HMAC key a kernel binds, written where the kernel's
 * `{connection_file}` argument points. Ports are chosen by binding port 0 and releasing it, as
 * jupyter_client does; the file is written atomically with mode 0600 (it holds the key).
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import { tempPathFor } from '../../util/fs.js';

export interface ConnectionInfo {
  ip: string;
  transport: 'tcp';
  shell_port: number;
  iopub_port: number;
  stdin_port: number;
  control_port: number;
  hb_port: number;
  key: string;
  signature_scheme: 'hmac-sha256';
  kernel_name: string;
}

export type Channel = 'shell' | 'iopub' | 'stdin' | 'control' | 'hb';

/** Free TCP ports on `ip`, all distinct (all held open until every one is chosen). */
export async function freePorts(count: number, ip = '127.0.0.1'): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < count; i++) {
      const server = net.createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, ip, () => resolve());
      });
      ports.push((server.address() as net.AddressInfo).port);
    }
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}

export async function newConnectionInfo(kernelName: string, ip = '127.0.0.1'): Promise<ConnectionInfo> {
  const [shell, iopub, stdin, control, hb] = await freePorts(5, ip);
  return {
    ip,
    transport: 'tcp',
    shell_port: shell!,
    iopub_port: iopub!,
    stdin_port: stdin!,
    control_port: control!,
    hb_port: hb!,
    key: randomBytes(32).toString('hex'),
    signature_scheme: 'hmac-sha256',
    kernel_name: kernelName,
  };
}

export function channelUrl(info: ConnectionInfo, channel: Channel): string {
  const port = {
    shell: info.shell_port,
    iopub: info.iopub_port,
    stdin: info.stdin_port,
    control: info.control_port,
    hb: info.hb_port,
  }[channel];
  return `${info.transport}://${info.ip}:${port}`;
}

export async function writeConnectionFile(file: string, info: ConnectionInfo): Promise<void> {
  const tmp = tempPathFor(file);
  try {
    await fsp.writeFile(tmp, JSON.stringify(info, null, 2), { mode: 0o600 });
    await fsp.rename(tmp, file);
  } catch (err) {
    await fsp.rm(tmp, { force: true });
    throw err;
  }
}

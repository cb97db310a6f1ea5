/**
 * IOPub messages → nbformat 4 cell outputs, as Jupyter front ends build them: consecutive stream
 * chunks of one name merge (carriage returns overwrite the line, so progress bars keep their last
 * state), display_data appends, update_display_data rewrites every earlier output carrying that
 * display id (in any cell: the registry is shared across a notebook), clear_output honours `wait`.
 */
import type { DisplayDataOutput, ExecuteResultOutput, MimeBundle, Output, StreamOutput } from '../nbformat.js';
import type { Message } from '../../jupyter/message.js';

type Displayable = DisplayDataOutput | ExecuteResultOutput;

/** display id → the outputs showing it, across all cells of one run. */
export class DisplayRegistry {
  private readonly byId = new Map<string, Set<Displayable>>();

  register(id: string, output: Displayable): void {
    let set = this.byId.get(id);
    if (!set) this.byId.set(id, (set = new Set()));
    set.add(output);
  }

  /** Apply an update to every output with `id`; returns how many changed. */
  update(id: string, data: MimeBundle, metadata: Record<string, unknown>): number {
    const set = this.byId.get(id);
    if (!set) return 0;
    for (const o of set) {
      o.data = data;
      o.metadata = metadata;
    }
    return set.size;
  }

  forget(output: Output): void {
    for (const set of this.byId.values()) set.delete(output as Displayable);
  }
}

/** Collapse `\r`: text before a carriage return on the same line is overwritten by what follows. */
export function applyCarriageReturns(text: string): string {
  return text.replace(/\r\n/g, '\n').replace(/[^\n]*\r(?=[^\n])/g, '');
}

export class OutputCollector {
  readonly outputs: Output[] = [];
  /** Set by an execute_result (its execution_count is the cell's). */
  executionCount: number | null = null;
  private clearOnNext = false;

  constructor(private readonly displays: DisplayRegistry = new DisplayRegistry()) {}

  private clearNow(): void {
    for (const o of this.outputs) this.displays.forget(o);
    this.outputs.length = 0;
    this.clearOnNext = false;
  }

  private push(o: Output): void {
    if (this.clearOnNext) this.clearNow();
    this.outputs.push(o);
  }

  /** Handle one iopub message; returns true when it changed the outputs. */
  handle(msg: Message): boolean {
    const c = msg.content as any;
    switch (msg.header.msg_type) {
      case 'stream': {
        if (this.clearOnNext) this.clearNow();
        const name = c.name === 'stderr' ? 'stderr' : 'stdout';
        const last = this.outputs[this.outputs.length - 1];
        if (last && last.output_type === 'stream' && last.name === name) {
          last.text = applyCarriageReturns(String(last.text) + String(c.text ?? ''));
        } else {
          this.push({
            output_type: 'stream',
            name,
            text: applyCarriageReturns(String(c.text ?? '')),
          } satisfies StreamOutput);
        }
        return true;
      }
      case 'display_data':
      case 'execute_result': {
        const o: Displayable =
          msg.header.msg_type === 'execute_result'
            ? {
                output_type: 'execute_result',
                execution_count: c.execution_count ?? null,
                data: c.data ?? {},
                metadata: c.metadata ?? {},
              }
            : { output_type: 'display_data', data: c.data ?? {}, metadata: c.metadata ?? {} };
        if (o.output_type === 'execute_result') this.executionCount = o.execution_count;
        this.push(o);
        const id = c.transient?.display_id;
        if (typeof id === 'string') this.displays.register(id, o);
        return true;
      }
      case 'update_display_data': {
        const id = c.transient?.display_id;
        return typeof id === 'string' && this.displays.update(id, c.data ?? {}, c.metadata ?? {}) > 0;
      }
      case 'error':
        this.push({
          output_type: 'error',
          ename: String(c.ename ?? 'Error'),
          evalue: String(c.evalue ?? ''),
          traceback: Array.isArray(c.traceback) ? c.traceback.map(String) : [],
        });
        return true;
      case 'clear_output':
        if (c.wait) this.clearOnNext = true;
        else this.clearNow();
        return true;
      default:
        return false;
    }
  }
}

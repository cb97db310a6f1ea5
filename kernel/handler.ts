/**
 * Request handling: what the kernel does with each shell and control message. No sockets here
 * (server.ts delivers messages and sends what `reply` and the IOPub publisher are given), so the
 * whole protocol behaviour is testable in-process.
 *
 * Execute requests run one at a time, in arrival order. Other requests (completion, inspection,
 * history...) are answered at once, also while a cell runs, so completion works during training.
 * Each request is bracketed by `status: busy` / `status: idle` when it is *processed* (an execute
 * request waiting in the queue is not yet busy), as the spec says and front ends' busy
 * indicators expect.
 */
import { errorContent } from './errors.js';
import type { Executor } from './executor.js';
import { History } from './history.js';
import type { IOPub, StreamName } from './iopub.js';
import { kernelInfo, type KernelInfo } from './info.js';
import { encodeBundle, kernelSink, resultBundle } from './display.js';
import {
  codePointsToUtf16,
  utf16ToCodePoints,
  type CompleteRequest,
  type ErrorContent,
  type ExecuteRequest,
  type HistoryRequest,
  type InspectRequest,
  type IsCompleteRequest,
  type Message,
} from '../src/jupyter/message.js';
import { converterModule } from './tslab.js';
import type { DisplaySink } from '../src/display/sink.js';

/** Sends the reply to the request being handled, on the channel it came from. */
export type Reply = (msgType: string, content: unknown) => void;

export interface HandlerOptions {
  executor: Executor;
  iopub: IOPub;
  /** Called after the shutdown_reply went out; the kernel then exits. */
  onShutdown?: (restart: boolean) => void;
  /**
   * Resolves once every request already sent to the shell socket has been read (server.ts).
   * After a failed cell, requests queued until then are aborted (see `abortQueued`).
   */
  drainShell?: () => Promise<void>;
  /** Text for the first cell's stderr when the runtime failed to preload. */
  preloadProblem?: string;
  info?: KernelInfo;
}

export class Handler {
  private executionCount = 0;
  private queue: Promise<void> = Promise.resolve();
  private aborting = false;
  /** Execute requests received and not yet started. */
  private waitingExecutes = 0;
  /** An interrupt arrived while execute requests waited: the next one is not run. */
  private interruptNext = false;
  private current: Message<unknown> | undefined;
  private preloadProblem: string | undefined;
  readonly history = new History();
  /** The display sink the kernel installs: outputs go to the request being executed. */
  readonly sink: DisplaySink;
  private readonly info: KernelInfo;

  constructor(private readonly options: HandlerOptions) {
    this.preloadProblem = options.preloadProblem;
    this.info = options.info ?? kernelInfo();
    this.sink = kernelSink((msgType, content) => this.publishCurrent(msgType, content));
  }

  /**
   * Where process output goes: into the output area of the request that ran last (or runs now).
   * Returns false before the first request (the text then goes to the real stream).
   */
  write(name: StreamName, text: string): boolean {
    if (!this.current) return false;
    this.options.iopub.stream(this.current, name, text);
    return true;
  }

  /** Publish for the current request (displays from runtime code); dropped before any request. */
  publishCurrent(msgType: string, content: unknown): void {
    if (this.current) this.options.iopub.publish(this.current, msgType, content);
  }

  /** Handle one request. Never throws: failures become error replies. */
  async handle(msg: Message, reply: Reply): Promise<void> {
    if (msg.header.msg_type === 'execute_request') {
      // Queue synchronously, so requests run in the order they arrived.
      this.waitingExecutes += 1;
      const run = this.queue.then(() => {
        this.waitingExecutes -= 1;
        return this.processed(msg, reply, () => this.execute(msg, reply));
      });
      this.queue = run;
      return run;
    }
    return this.processed(msg, reply, () => this.dispatch(msg, reply));
  }

  /** True while an execute request is being processed. */
  get running(): boolean {
    return this.options.executor.busy;
  }

  /** Interrupt the running cell (SIGINT, or interrupt_request on the control channel). */
  interrupt(): void {
    // Between cells of a queue (the running one just finished, the next not yet started) the
    // interrupt is meant for the next one: the user pressed stop while the kernel was busy.
    if (!this.options.executor.busy && this.waitingExecutes > 0) this.interruptNext = true;
    this.options.executor.interrupt();
  }

  private async processed(msg: Message, reply: Reply, work: () => Promise<void> | void): Promise<void> {
    const { iopub } = this.options;
    iopub.publish(msg, 'status', { execution_state: 'busy' });
    try {
      await work();
    } catch (err) {
      // A bug of ours (say, the converter failing on odd input) must not kill the kernel or leave
      // the front end waiting: answer with an error reply of the right type.
      const replyType = msg.header.msg_type.replace(/_request$/, '_reply');
      reply(replyType, { status: 'error', ...errorContent(err) });
    } finally {
      iopub.flush();
      iopub.publish(msg, 'status', { execution_state: 'idle' });
    }
  }

  private async dispatch(msg: Message, reply: Reply): Promise<void> {
    const content = msg.content;
    switch (msg.header.msg_type) {
      case 'kernel_info_request':
        return reply('kernel_info_reply', this.info);
      case 'complete_request':
        return reply('complete_reply', this.complete(content as unknown as CompleteRequest));
      case 'inspect_request':
        return reply('inspect_reply', this.inspect(content as unknown as InspectRequest));
      case 'is_complete_request':
        return reply('is_complete_reply', this.isComplete(content as unknown as IsCompleteRequest));
      case 'history_request':
        return reply('history_reply', {
          status: 'ok',
          history: this.history.query(content as unknown as HistoryRequest),
        });
      case 'comm_info_request':
        // No comms yet (widgets are rendered by our MIME renderers, not ipywidgets).
        return reply('comm_info_reply', { status: 'ok', comms: {} });
      case 'interrupt_request':
        this.interrupt();
        return reply('interrupt_reply', { status: 'ok' });
      case 'shutdown_request': {
        const restart = (content as { restart?: boolean }).restart === true;
        reply('shutdown_reply', { status: 'ok', restart });
        this.options.iopub.publish(msg, 'shutdown_reply', { status: 'ok', restart });
        this.options.iopub.flush();
        this.options.onShutdown?.(restart);
        return;
      }
      case 'comm_open':
      case 'comm_msg':
      case 'comm_close':
        return; // one-way messages for comms we do not have
      default:
        throw new Error(`unsupported message type ${msg.header.msg_type}`);
    }
  }

  private async execute(msg: Message, reply: Reply): Promise<void> {
    const req = msg.content as unknown as ExecuteRequest;
    const code = typeof req.code === 'string' ? req.code : '';
    const silent = req.silent === true;
    const storeHistory = !silent && req.store_history !== false;
    const { iopub, executor } = this.options;
    if (this.aborting) {
      reply('execute_reply', { status: 'aborted' });
      return;
    }
    if (storeHistory) this.executionCount += 1;
    const count = this.executionCount;
    this.current = msg;
    if (!silent) iopub.publish(msg, 'execute_input', { code, execution_count: count });
    if (storeHistory) this.history.add(count, code);
    if (this.preloadProblem) {
      iopub.stream(msg, 'stderr', `${this.preloadProblem}\n`);
      this.preloadProblem = undefined;
    }
    if (this.interruptNext) {
      this.interruptNext = false;
      const evalue = 'interrupted by the user before the cell ran';
      this.fail(
        msg,
        reply,
        count,
        { ename: 'InterruptedError', evalue, traceback: [`InterruptedError: ${evalue}`] },
        !silent,
      );
      if (req.stop_on_error !== false) this.abortQueued();
      return;
    }

    const outcome = await executor.execute(code, `In[${count}]`);
    // Output printed by the cell comes before its result.
    iopub.flush();
    if (outcome.result && !silent) {
      const bundle = resultBundle(outcome.result.value);
      if (bundle) {
        iopub.publish(msg, 'execute_result', { execution_count: count, data: encodeBundle(bundle), metadata: {} });
        const text = bundle['text/plain'];
        if (storeHistory && typeof text === 'string') this.history.setOutput(count, text);
      }
    }
    if (outcome.error) {
      this.fail(msg, reply, count, outcome.error, !silent);
      if (req.stop_on_error !== false) this.abortQueued();
      return;
    }
    reply('execute_reply', { status: 'ok', execution_count: count, payload: [], user_expressions: {} });
  }

  private fail(msg: Message, reply: Reply, count: number, error: ErrorContent, broadcast: boolean): void {
    if (broadcast) this.options.iopub.publish(msg, 'error', error);
    reply('execute_reply', { status: 'error', execution_count: count, ...error });
  }

  /**
   * After a failed cell (with stop_on_error), abort the execute requests the front end already
   * sent ("Run All" sends them all at once) as IPython does: everything read from the shell
   * socket until it has been drained is answered `aborted` without running.
   */
  private abortQueued(): void {
    this.aborting = true;
    const drained = this.options.drainShell?.() ?? Promise.resolve();
    void drained.then(() => {
      this.queue = this.queue.then(() => {
        this.aborting = false;
      });
    });
  }

  private complete(req: CompleteRequest): Record<string, unknown> {
    const code = req.code;
    const pos = codePointsToUtf16(code, req.cursor_pos ?? code.length);
    const c = this.options.executor.complete(code, pos);
    const start = utf16ToCodePoints(code, c.start),
      end = utf16ToCodePoints(code, c.end);
    return {
      status: 'ok',
      matches: c.matches,
      cursor_start: start,
      cursor_end: end,
      metadata: {
        // JupyterLab shows these as the completer's type column/icons.
        _jupyter_types_experimental: c.matches.map((text, i) => ({ start, end, text, type: c.kinds[i] ?? '' })),
      },
    };
  }

  private inspect(req: InspectRequest): Record<string, unknown> {
    const code = req.code;
    const text = this.options.executor.inspect(code, codePointsToUtf16(code, req.cursor_pos ?? code.length));
    if (text === null) return { status: 'ok', found: false, data: {}, metadata: {} };
    return { status: 'ok', found: true, data: { 'text/plain': text }, metadata: {} };
  }

  private isComplete(req: IsCompleteRequest): Record<string, unknown> {
    const r = converterModule().isCompleteCode(req.code);
    return r.completed ? { status: 'complete' } : { status: 'incomplete', indent: r.indent ?? '' };
  }
}

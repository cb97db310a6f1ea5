/**
 * From an attempt's recorded calls to what the trainer trains on, token-exactly.
 *
 * A multi-turn attempt (several LLM calls, with tool results, observations or the agent's own
 * checks between them) is one trajectory. When each call's prompt starts with the previous
 * call's prompt and completion — the usual case: the agent sends the conversation back with the
 * model's answer in it — the calls merge into one sequence: the first call's prompt, then every
 * token that came after it. Tokens the policy sampled are trained on (mask 1) with their recorded
 * ids and sampling log-probs; everything else (the template's turn markers, the user's and tools'
 * text) is masked out (mask 0). When a prompt does not extend the previous sequence (the agent
 * rewrote its history, the chat template re-tokenised the answer differently, a later turn added
 * an image), a new segment starts with that call's own prompt, so the ids trained on are still the
 * ids recorded; the segments of one trajectory share its advantage. Nothing is re-tokenised.
 */
import type { ImageInput, Prompt } from '../engine/types.js';
import type { AttemptRecord, RecordedCall } from './gateway.js';

/** One sequence to train on: a prompt, then tokens of which the policy sampled those with mask 1. */
export interface TrajectorySegment {
  /** The first call's prompt: ids with image pad tokens, and the processed images. */
  prompt: Prompt;
  /** Every token after the prompt, sampled (mask 1) or not (mask 0). */
  tokenIds: Int32Array;
  /** 1: sampled by the policy, in the loss; 0: not sampled by the policy, masked out. */
  mask: Uint8Array;
  /** Sampling log-prob of each token with mask 1; NaN where mask is 0. */
  logprobs: Float32Array;
  /** Indices of the calls (RecordedCall.index) merged in this segment. */
  calls: number[];
}

/** One attempt as the trainer sees it. */
export interface Trajectory {
  rolloutId: string;
  attemptId: string;
  segments: TrajectorySegment[];
  /** LLM calls made (turns). */
  turns: number;
  /** The attempt's reward (NaN when it failed). */
  reward: number;
  /** The recorded calls' weight versions (one value when the trajectory is on-policy for one version). */
  weightVersions: number[];
  /** The last call's first choice, for display. */
  finalText: string;
}

export interface TrajectoryOptions {
  /** Merge calls that extend the previous sequence into one segment (default true). */
  merge?: boolean;
}

function sameImage(a: ImageInput, b: ImageInput): boolean {
  if (a === b) return true;
  if (a.gridThw.some((v, i) => v !== b.gridThw[i]) || a.pixels.length !== b.pixels.length) return false;
  return Buffer.from(a.pixels.buffer, a.pixels.byteOffset, a.pixels.byteLength).equals(
    Buffer.from(b.pixels.buffer, b.pixels.byteOffset, b.pixels.byteLength),
  );
}

interface Open {
  prompt: Prompt;
  ids: number[];
  mask: number[];
  lps: number[];
  calls: number[];
}

function close(o: Open): TrajectorySegment {
  return {
    prompt: o.prompt,
    tokenIds: Int32Array.from(o.ids),
    mask: Uint8Array.from(o.mask),
    logprobs: Float32Array.from(o.lps),
    calls: o.calls,
  };
}

/** Does `call` extend the open segment (its prompt = the segment's prompt + tokens, same images)? */
function extendsOpen(o: Open, call: RecordedCall): boolean {
  const p = call.prompt.ids,
    base = o.prompt.ids;
  if (p.length <= base.length + o.ids.length) return false;
  if (call.prompt.images.length !== o.prompt.images.length) return false;
  for (let i = 0; i < base.length; i++) if (p[i] !== base[i]) return false;
  for (let i = 0; i < o.ids.length; i++) if (p[base.length + i] !== o.ids[i]) return false;
  return call.prompt.images.every((img, i) => sameImage(img, o.prompt.images[i]!));
}

/**
 * The segments of an attempt's calls. Each call contributes its first choice to the trajectory;
 * further choices of a call (n > 1) become segments of their own, since a conversation continues
 * one of them.
 */
export function trajectorySegments(
  calls: readonly RecordedCall[],
  options: TrajectoryOptions = {},
): TrajectorySegment[] {
  const merge = options.merge ?? true;
  const out: TrajectorySegment[] = [];
  let open: Open | undefined;
  for (const call of calls) {
    const first = call.choices[0];
    if (!first) continue;
    if (merge && open && extendsOpen(open, call)) {
      const from = open.prompt.ids.length + open.ids.length;
      for (let i = from; i < call.prompt.ids.length; i++) {
        open.ids.push(call.prompt.ids[i]!);
        open.mask.push(0);
        open.lps.push(NaN);
      }
      open.calls.push(call.index);
    } else {
      if (open) out.push(close(open));
      open = { prompt: call.prompt, ids: [], mask: [], lps: [], calls: [call.index] };
    }
    for (let i = 0; i < first.tokenIds.length; i++) {
      open.ids.push(first.tokenIds[i]!);
      open.mask.push(1);
      open.lps.push(first.logprobs[i]!);
    }
    for (const extra of call.choices.slice(1)) {
      out.push({
        prompt: call.prompt,
        tokenIds: extra.tokenIds.slice(),
        mask: new Uint8Array(extra.tokenIds.length).fill(1),
        logprobs: extra.logprobs.slice(),
        calls: [call.index],
      });
    }
  }
  if (open) out.push(close(open));
  return out;
}

/** The trajectory of a finished attempt. */
export function trajectoryOf(rec: AttemptRecord, options: TrajectoryOptions = {}): Trajectory {
  const segments = trajectorySegments(rec.calls, options);
  const last = rec.calls.at(-1);
  return {
    rolloutId: rec.rolloutId,
    attemptId: rec.attemptId,
    segments,
    turns: rec.calls.length,
    reward: rec.status === 'succeeded' && rec.reward !== undefined ? rec.reward : NaN,
    weightVersions: [...new Set(rec.calls.map((c) => c.weightVersion))],
    finalText: last?.choices[0]?.text ?? '',
  };
}

/**
 * The policy tokens of a segment as the recorded calls had them, for checks: per call, its
 * completion ids. Concatenating the segment's mask-1 tokens gives exactly these, in order.
 */
export function policyTokens(seg: TrajectorySegment): number[] {
  const out: number[] = [];
  seg.tokenIds.forEach((t, i) => {
    if (seg.mask[i]) out.push(t);
  });
  return out;
}

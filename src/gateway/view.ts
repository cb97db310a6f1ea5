/**
 * The group view of agent attempts: the task's sample, then one entry per attempt whose text is
 * its turns (each call's answer, and what the agent said between them), with its reward, its
 * advantage within the group, its policy tokens (hover: their sampling log-probs) and, for a failed
 * attempt, why. Uses the display layer's group payload, so the notebook renderer and reports show
 * it as they show the trainer's groups.
 */
import { computeAdvantages } from '../grpo/advantages.js';
import { samplePayload } from '../display/sample.js';
import { bundleFor } from '../display/bundle.js';
import { emit, type DisplayOptions, type DisplaySink } from '../display/output.js';
import { MIME, type GroupCompletion, type GroupPayload, type MimeBundle } from '../display/types.js';
import type { AgentGroup } from './agent.js';
import type { ChatMessage } from '../text/tokenizer.js';
import type { AttemptRecord } from './gateway.js';

function messageText(m: ChatMessage): string {
  return typeof m.content === 'string'
    ? m.content
    : m.content.map((p) => (p.type === 'text' ? p.text : `[${p.type}]`)).join('');
}

/** An attempt's turns as text: "1 ▸ answer", then the messages the agent added before the next call. */
export function attemptTurns(a: AttemptRecord): string {
  const lines: string[] = [];
  a.calls.forEach((c, k) => {
    if (k > 0) {
      const before = a.calls[k - 1]!.messages.length + 1; // the previous call's conversation and its answer
      for (const m of c.messages.slice(before)) lines.push(`   ${m.role}: ${messageText(m)}`);
    }
    lines.push(`${k + 1} ▸ ${c.choices[0]?.text ?? ''}`);
  });
  return lines.join('\n');
}

export interface AgentGroupViewOptions {
  /** Decode one token id (the hover shows the policy tokens with their log-probs). */
  decodeToken?: (id: number) => string;
  maxSide?: number;
  step?: number;
}

/** The display layer's group payload of an agent group. */
export async function agentGroupPayload(g: AgentGroup, o: AgentGroupViewOptions = {}): Promise<GroupPayload> {
  const ok = g.trajectories.map((t) => Number.isFinite(t.reward));
  const [adv] = computeAdvantages([g.trajectories.filter((_, i) => ok[i]).map((t) => t.reward)], {
    estimator: 'grpo',
    scale: 'group',
    epsilon: 1e-4,
  });
  let k = 0;
  const completions = g.attempts.map((a, i): GroupCompletion => {
    const t = g.trajectories[i]!;
    const ids: number[] = [],
      lps: number[] = [];
    for (const s of t.segments)
      s.mask.forEach((m, j) => {
        if (m) {
          ids.push(s.tokenIds[j]!);
          lps.push(s.logprobs[j]!);
        }
      });
    const out: GroupCompletion = {
      text: attemptTurns(a),
      reward: ok[i] ? t.reward : null,
      advantage: ok[i] ? adv![k++]! : 0,
      length: ids.length,
      finishReason: `${a.status}, ${a.calls.length} turn${a.calls.length === 1 ? '' : 's'}${t.segments.length > 1 ? `, ${t.segments.length} segments` : ''}`,
    };
    if (a.error) out.errors = [a.error];
    if (o.decodeToken) {
      out.tokens = ids.map((id) => o.decodeToken!(id));
      out.tokenLogprobs = lps.map((x) => (Number.isFinite(x) ? x : -1e9));
    }
    return out;
  });
  const p: GroupPayload = {
    title: `${g.rolloutId}: ${g.attempts.length} attempts`,
    sample: await samplePayload(g.sample, { maxSide: o.maxSide ?? 256 }),
    completions,
  };
  if (o.step !== undefined) p.step = o.step;
  return p;
}

/** Show an agent group (in a notebook: displayed; anywhere: the bundle is returned). */
export async function showAgentGroup(
  g: AgentGroup,
  o: AgentGroupViewOptions & DisplayOptions & { sink?: DisplaySink } = {},
): Promise<MimeBundle> {
  return emit(
    bundleFor(MIME.group, await agentGroupPayload(g, o)),
    { displayId: o.displayId, update: o.update },
    o.sink,
  );
}

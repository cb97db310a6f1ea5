/**
 * The rollout of a GRPO step, as free functions over explicit inputs: prompts of samples (images
 * through the trainer's `loadImages`, cached by sample id), G completions per prompt, and their
 * rewards.
 *
 * Batched (the default): every prompt of a round is submitted to the engine in the same tick, so
 * they enter one native sampling run (src/engine/sampling.ts: one batched decode loop, each
 * prompt's prefix prefilled once); each group settles as soon as its own rows finish and its
 * rewards are scored while later groups still decode. The engine's result for a request does not
 * depend on what else is in the run, so a batched round gives exactly the groups a sequential one
 * (one prompt at a time, `mode: 'sequential'`) gives with the same seeds.
 *
 * With a Policy (an OpenAI-compatible server, LocalPolicy), a round's requests go out
 * concurrently, at most `policyConcurrency` at a time.
 *
 * A sample that cannot be rolled out — its images do not load, its prompt does not fit the
 * model's context, its generation or its rewards fail as a whole — is skipped and reported by id
 * (`SkippedSample`); the round goes on with the others.
 */
import type { EngineModel, ImageInput, Prompt, SampleResult } from '../engine/types.js';
import type { VqaSample } from '../data/types.js';
import type { Completion, Policy } from '../rollout/types.js';
import type { VlmTokenizer } from '../text/tokenizer.js';
import { VlmTokenizer as Tokenizer } from '../text/tokenizer.js';
import { scoreGroups, type OnRewardError, type RewardSet } from '../reward/runner.js';
import { answerAfterThinking } from '../eval/thinking.js';
import type { GrpoConfig } from './config.js';
import { isZeroVariance } from './advantages.js';

/** One sampled completion of a group, with everything the step learned about it. */
export interface RolloutCompletion {
  text: string;
  /** Completion token ids as trained on (the stop token included when the completion stopped). */
  tokenIds: Int32Array;
  finishReason: 'stop' | 'length' | 'error';
  /** Weighted total reward; NaN when the completion was excluded after a failure. */
  reward: number;
  /** Each reward's score and named parts. */
  rewardParts: Record<string, number>;
  /** Official VQA accuracy of the text against the sample's answers. */
  accuracy: number;
  advantage: number;
  /** Log-probs of the tokens under the sampling policy (when the sampler reports them). */
  logprobs?: Float32Array;
  /** Why the completion was excluded (reward or generation failures). */
  errors: string[];
}

export interface RolloutGroup {
  sample: VqaSample;
  promptText: string;
  promptIds: Int32Array;
  imagePaths: string[];
  completions: RolloutCompletion[];
  /** All valid rewards tied: no learning signal. */
  zeroVariance: boolean;
  /** The engine prompt (ids + processed images). Not serialised. */
  prompt: Prompt;
}

/** A sample of a step that was skipped, and why. */
export interface SkippedSample {
  sampleId: string;
  /** 'image': its images did not load; 'length': the prompt does not fit; 'generation' / 'reward': they failed for the whole group. */
  kind: 'image' | 'length' | 'generation' | 'reward';
  message: string;
}

/** A failure that belongs to one sample: the step skips the sample and goes on. */
export class SampleError extends Error {
  constructor(
    readonly sampleId: string,
    readonly kind: SkippedSample['kind'],
    message: string,
  ) {
    super(message);
    this.name = 'SampleError';
  }
}

type Generated = Omit<RolloutCompletion, 'reward' | 'rewardParts' | 'accuracy' | 'advantage'>;

/** Builds (and caches) the engine prompt of a sample: the trainer's chat template over its images. */
export class PromptBuilder {
  private readonly cache = new Map<string, ImageInput[]>();
  /**
   * Built prompts by sample id, for the samples whose images are cached (evicted with them): rendering
   * the template and tokenizing 16 prompts took ~7 ms at the head of every rollout, which `prefetch`
   * now does while the previous step's update runs. A sample's prompt depends only on its question,
   * its images and this builder's tokenizer and system prompt, so it is built once.
   */
  private readonly built = new Map<string, { prompt: Prompt; text: string; question: string }>();
  /** Loads in flight (a prefetch, or a round's own), so that the same sample is never loaded twice at once. */
  private readonly loading = new Map<string, Promise<ImageInput[]>>();

  constructor(
    private readonly o: {
      tokenizer: VlmTokenizer;
      loadImages: (sample: VqaSample) => Promise<ImageInput[]>;
      systemPrompt?: string;
      mergeSize?: number;
      cacheSize?: number;
    },
  ) {}

  async images(sample: VqaSample): Promise<ImageInput[]> {
    const hit = this.cache.get(sample.id);
    if (hit) return hit;
    let imgs: ImageInput[];
    try {
      let load = this.loading.get(sample.id);
      if (!load) {
        load = this.o.loadImages(sample);
        this.loading.set(sample.id, load);
        const forget = () => this.loading.delete(sample.id);
        load.then(forget, forget);
      }
      imgs = await load;
    } catch (err) {
      throw new SampleError(
        sample.id,
        'image',
        `sample ${sample.id}: cannot load its image ${sample.imagePath}: ${(err as Error).message}`,
      );
    }
    const limit = this.o.cacheSize ?? 512;
    if (limit > 0 && !this.cache.has(sample.id)) {
      if (this.cache.size >= limit) {
        const oldest = this.cache.keys().next().value!;
        this.cache.delete(oldest);
        this.built.delete(oldest);
      }
      this.cache.set(sample.id, imgs);
    }
    return imgs;
  }

  /**
   * Starts loading the images of `samples` that are not cached (the next step's, while this step's
   * update keeps the device busy); failures are left for the real call to report.
   */
  prefetch(samples: readonly VqaSample[]): void {
    for (const s of samples) if (!this.built.has(s.id)) this.promptFor(s).catch(() => {});
  }

  async promptFor(sample: VqaSample): Promise<{ prompt: Prompt; text: string }> {
    const hit = this.built.get(sample.id);
    // the same id with another question (a data set edited in place) is built anew
    if (hit?.question === sample.question) return hit;
    const images = await this.images(sample);
    const messages = Tokenizer.vqaMessages(
      sample.question,
      images.map((im) => (im.video ? 'video' : 'image')),
      this.o.systemPrompt,
    );
    const prompt = this.o.tokenizer.buildPrompt(messages, images, { mergeSize: this.o.mergeSize ?? 2 });
    const out = { prompt, text: this.o.tokenizer.applyChatTemplate(messages), question: sample.question };
    // kept only while its images are (built entries leave with them on eviction)
    if (this.cache.get(sample.id) === images) this.built.set(sample.id, out);
    return out;
  }
}

/** Throws a SampleError naming the sample when prompt + `extra` tokens cannot fit `limit`. */
export function checkPromptLength(
  sample: VqaSample,
  prompt: Prompt,
  extra: number,
  limit: number,
  what = 'maxCompletionLength',
): void {
  if (prompt.ids.length + extra > limit) {
    throw new SampleError(
      sample.id,
      'length',
      `sample ${sample.id}: its prompt has ${prompt.ids.length} tokens (images included) and ${what} is ${extra}; ` +
        `the model takes at most ${limit} tokens (${prompt.ids.length + extra} asked); shorten the question or lower ${what}`,
    );
  }
}

/**
 * Completion ids as trained on, at most maxCompletionLength: a stopped completion keeps its stop
 * token (appended when the sampler left it out, e.g. text re-encoded from a server's answer).
 */
export function completionIds(
  tokenizer: VlmTokenizer,
  ids: ArrayLike<number>,
  finish: string,
  max: number,
): Int32Array {
  const arr = Array.from(ids);
  const stops = tokenizer.stopTokenIds;
  if (finish === 'stop' && (arr.length === 0 || !stops.includes(arr[arr.length - 1]!))) {
    return Int32Array.from([...arr.slice(0, max - 1), tokenizer.special.imEnd]);
  }
  return Int32Array.from(arr.slice(0, max));
}

/** Everything a rollout round reads. */
export interface RolloutInputs {
  model: EngineModel;
  tokenizer: VlmTokenizer;
  config: Readonly<GrpoConfig>;
  prompts: PromptBuilder;
  rewards: RewardSet;
  onRewardError: OnRewardError;
  accuracyOf: (prediction: string, answers: readonly string[]) => number;
  /** Roll out with this policy instead of the engine's sampler. */
  policy?: Policy;
  /** 'batched' (default): all prompts in one engine run; 'sequential': one prompt at a time (for comparison). */
  mode?: 'batched' | 'sequential';
  /** Most policy requests in flight at once (default 16). */
  policyConcurrency?: number;
  log: (line: string) => void;
}

export interface RoundResult {
  /** Groups in the order of the samples drawn (skipped samples left out). */
  groups: RolloutGroup[];
  skipped: SkippedSample[];
  genTokens: number;
  /** Wall seconds until the last generation settled. */
  genSeconds: number;
  /** Wall seconds of reward scoring not hidden behind generation (after the last group decoded). */
  rewardSeconds: number;
}

/** The engine's (or policy's) completions for one prompt. */
function fromSampler(t: VlmTokenizer, max: number, res: SampleResult): Generated[] {
  return res.tokenIds.map((ids, i) => {
    const tokenIds = completionIds(t, ids, res.finishReason[i]!, max);
    return {
      text: t.decodeCompletion(tokenIds).text,
      tokenIds,
      finishReason: res.finishReason[i]!,
      logprobs: res.logprobs[i],
      errors: [],
    };
  });
}

function fromPolicy(t: VlmTokenizer, max: number, sample: VqaSample, out: Completion[]): Generated[] {
  return out.map((comp) => {
    if (comp.finishReason === 'error') {
      return {
        text: '',
        tokenIds: new Int32Array(0),
        finishReason: 'error' as const,
        errors: [`generation failed for sample ${sample.id}: ${comp.error ?? 'unknown error'}`],
      };
    }
    const ids = comp.tokenIds ?? t.encode(comp.text);
    return {
      text: comp.text,
      tokenIds: completionIds(t, ids, comp.finishReason, max),
      finishReason: comp.finishReason,
      logprobs: comp.logprobs ? Float32Array.from(comp.logprobs) : undefined,
      errors: [],
    };
  });
}

/** Rewards and accuracy of one group's completions (in place); zeroVariance set. */
async function scoreGroup(inp: RolloutInputs, g: RolloutGroup, step: number, signal?: AbortSignal): Promise<void> {
  const batch = await scoreGroups(
    [
      {
        sample: g.sample,
        completions: g.completions.map((c): string | Completion =>
          c.finishReason === 'error'
            ? { text: '', finishReason: 'error', error: c.errors[0] ?? 'generation failed' }
            : c.text,
        ),
      },
    ],
    inp.rewards,
    { onError: inp.onRewardError, step, signal, onMessage: (m) => inp.log(m) },
  );
  const failed = new Map<number, string[]>();
  for (const f of batch.failures) {
    if (f.kind === 'generation') continue;
    failed.set(f.completion, [...(failed.get(f.completion) ?? []), f.message]);
  }
  g.completions.forEach((comp, ci) => {
    const s = batch.groups[0]!.completions[ci]!;
    // Accuracy scores the answer, not a thinking model's reasoning; rewards got the whole text.
    comp.accuracy = inp.accuracyOf(answerAfterThinking(comp.text), g.sample.answers);
    if (comp.finishReason === 'error') return;
    comp.reward = s.total ?? NaN;
    for (const r of s.rewards) {
      if (r.score !== null) comp.rewardParts[r.name] = r.score;
      for (const [p, v] of Object.entries(r.parts ?? {})) comp.rewardParts[`${r.name}.${p}`] = v;
    }
    comp.errors.push(...(failed.get(ci) ?? []));
  });
  const valid = g.completions.filter((x) => Number.isFinite(x.reward)).map((x) => x.reward);
  g.zeroVariance = valid.length < 2 || isZeroVariance(valid);
}

function skippedOf(sample: VqaSample, err: unknown, kind: SkippedSample['kind']): SkippedSample {
  if (err instanceof SampleError) return { sampleId: err.sampleId, kind: err.kind, message: err.message };
  const msg = err instanceof Error ? err.message : String(err);
  return { sampleId: sample.id, kind, message: msg.includes(sample.id) ? msg : `sample ${sample.id}: ${msg}` };
}

/**
 * One rollout round over `samples` (seeds[i] seeds sample i's completions): `n` completions each,
 * sampled at `temperature` up to `maxTokens`, scored by the rewards. Rejects only on abort (with
 * the signal's reason) or on an error that is not a sample's own.
 */
export async function rolloutRound(
  inp: RolloutInputs,
  samples: readonly VqaSample[],
  seeds: readonly number[],
  step: number,
  signal?: AbortSignal,
): Promise<RoundResult> {
  const c = inp.config;
  const max = c.maxCompletionLength;
  const t0 = performance.now();
  let lastGen = t0;
  const groups: (RolloutGroup | undefined)[] = new Array(samples.length);
  const skipped: (SkippedSample | undefined)[] = new Array(samples.length);
  let genTokens = 0;
  const aborted = () => signal?.aborted === true;

  // One sample: prompt → completions → rewards. Resolves with nothing; records into groups/skipped.
  const prepare = async (i: number) => {
    const sample = samples[i]!;
    const { prompt, text } = await inp.prompts.promptFor(sample);
    if (!inp.policy) checkPromptLength(sample, prompt, max, inp.model.maxSequenceLength);
    return { sample, prompt, text };
  };
  const generate = (sample: VqaSample, prompt: Prompt, seed: number): Promise<Generated[]> => {
    const opts = {
      temperature: c.temperature,
      topP: c.topP,
      topK: c.topK || undefined,
      stopTokenIds: inp.tokenizer.stopTokenIds,
      seed,
      signal,
    };
    if (inp.policy)
      return inp.policy
        .generate(sample, { n: c.numGenerations, maxTokens: max, ...opts, forTraining: true })
        .then((out) => fromPolicy(inp.tokenizer, max, sample, out));
    return inp.model
      .sample({ prompt, n: c.numGenerations, maxTokens: max, ...opts })
      .then((res) => fromSampler(inp.tokenizer, max, res));
  };
  const finish = async (i: number, p: { sample: VqaSample; prompt: Prompt; text: string }, gen: Generated[]) => {
    lastGen = performance.now();
    for (const g of gen) genTokens += g.tokenIds.length;
    const group: RolloutGroup = {
      sample: p.sample,
      promptText: p.text,
      promptIds: p.prompt.ids,
      imagePaths: p.sample.imagePaths ?? [p.sample.imagePath],
      prompt: p.prompt,
      zeroVariance: false,
      completions: gen.map((g) => ({ ...g, reward: NaN, rewardParts: {}, accuracy: NaN, advantage: 0 })),
    };
    if (gen.length > 0 && gen.every((g) => g.finishReason === 'error')) {
      skipped[i] = {
        sampleId: p.sample.id,
        kind: 'generation',
        message: gen[0]!.errors[0] ?? `sample ${p.sample.id}: generation failed`,
      };
      return;
    }
    try {
      await scoreGroup(inp, group, step, signal);
    } catch (err) {
      if (aborted()) throw err;
      skipped[i] = skippedOf(p.sample, err, 'reward');
      return;
    }
    groups[i] = group;
    // Every completion excluded by failing rewards: the group stays (its errors show) but teaches
    // nothing, and the sample counts as bad.
    if (
      group.completions.every((x) => !Number.isFinite(x.reward)) &&
      group.completions.some((x) => x.errors.length > 0)
    ) {
      skipped[i] = {
        sampleId: p.sample.id,
        kind: 'reward',
        message: `sample ${p.sample.id}: every completion's reward failed (${group.completions.find((x) => x.errors.length)!.errors[0]})`,
      };
    }
  };
  const one = async (i: number, prepared?: { sample: VqaSample; prompt: Prompt; text: string }) => {
    const sample = samples[i]!;
    let p = prepared;
    try {
      p ??= await prepare(i);
    } catch (err) {
      if (aborted()) throw err;
      skipped[i] = skippedOf(sample, err, 'image');
      return;
    }
    let gen: Generated[];
    try {
      gen = await generate(p.sample, p.prompt, seeds[i]!);
    } catch (err) {
      if (aborted()) throw err;
      // The policy or engine refused this request alone (the engine's checks run per request).
      skipped[i] = skippedOf(sample, err, 'generation');
      return;
    }
    await finish(i, p, gen);
  };

  if (inp.mode === 'sequential') {
    for (let i = 0; i < samples.length; i++) {
      if (aborted()) break;
      await one(i);
    }
  } else if (inp.policy) {
    // Requests out concurrently, bounded; each group scored as it arrives.
    const limit = Math.max(1, inp.policyConcurrency ?? 16);
    let next = 0;
    const worker = async () => {
      while (next < samples.length && !aborted()) await one(next++);
    };
    await Promise.all(Array.from({ length: Math.min(limit, samples.length) }, worker));
  } else {
    // Prompts first (images load concurrently), then every request in the same tick: one engine run.
    const prepared = await Promise.all(
      samples.map((s, i) =>
        prepare(i).then(
          (p) => p,
          (err: unknown) => {
            if (!aborted()) skipped[i] = skippedOf(s, err, 'image');
            return undefined;
          },
        ),
      ),
    );
    if (!aborted()) {
      const tasks: Promise<void>[] = [];
      prepared.forEach((p, i) => {
        if (p) tasks.push(one(i, p));
      });
      const settled = await Promise.allSettled(tasks);
      const failure = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
      if (failure) throw failure.reason;
    }
  }
  if (aborted()) throw signal!.reason instanceof Error ? signal!.reason : new Error('interrupted');
  const end = performance.now();
  return {
    groups: groups.filter((g): g is RolloutGroup => g !== undefined),
    skipped: skipped.filter((s): s is SkippedSample => s !== undefined),
    genTokens,
    genSeconds: (lastGen - t0) / 1000,
    rewardSeconds: Math.max(0, end - lastGen) / 1000,
  };
}

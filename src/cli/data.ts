/** `vqalab data ...`: convert VQAv2 JSON to Parquet, verify a dataset, generate the synthetic set, show a dataset. */
import path from 'node:path';
import { dispatchSubcommand, type Command } from './command.js';
import { UsageError } from '../util/errors.js';
import { VqaDataset } from '../data/dataset.js';
import { writeSynth, SYNTH_DIFFICULTIES, type SynthDifficulty } from '../data/synth.js';
import { writeSynthVideo, SYNTH_VIDEO_FAMILIES, type SynthVideoFamily } from '../data/synth-video.js';
import { SYNTH_FAMILIES, type SynthFamily } from '../data/synth-vocab.js';
import { convertVqav2 } from '../data/vqav2.js';
import { formatVerifyReport, verifyDataset } from '../data/verify.js';

type Spec = Record<string, 'string' | 'int' | 'flag'>;

/**
 * The options a usage text lists, one a line under "Options:": `  --name N` takes a non-negative
 * integer, `  --name VALUE` (one space, then a word in capitals) a string, a bare `  --name` is a
 * flag. The help and the parser read the same lines, so they cannot disagree.
 */
function optionsOf(usage: string): Spec {
  const spec: Spec = {};
  const section = usage.split(/^Options:$/m)[1] ?? '';
  for (const [, name, value] of section.matchAll(/^ {2}--([a-z][a-z-]*)(?: ([A-Z]+)\b)?/gm))
    spec[name!] = value === undefined ? 'flag' : value === 'N' ? 'int' : 'string';
  return spec;
}

/** Parse `--name value` / `--flag` options (those `usage` lists) and positionals; unknown options are usage errors. */
function parseArgs(
  cmd: string,
  argv: string[],
  usage: string,
): { opts: Record<string, string | number | boolean>; positional: string[] } {
  const spec = optionsOf(usage);
  const opts: Record<string, string | number | boolean> = {};
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    }
    if (!a.startsWith('--')) {
      positional.push(a);
      continue;
    }
    const [name, inline] = a.slice(2).split(/=(.*)/s, 2) as [string, string | undefined];
    const kind = spec[name];
    if (!kind) throw new UsageError(`${cmd}: unknown option --${name}; run "vqalab data ${cmd} --help"`);
    if (kind === 'flag') {
      opts[name] = true;
      continue;
    }
    const v = inline ?? argv[++i];
    if (v === undefined) throw new UsageError(`${cmd}: --${name} needs a value`);
    if (kind === 'int') {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0)
        throw new UsageError(`${cmd}: --${name} expects a non-negative integer, got "${v}"`);
      opts[name] = n;
    } else opts[name] = v;
  }
  return { opts, positional };
}

/** Stop long work cleanly on Ctrl-C: the output stays absent (temp files are removed). */
function abortOnSigint(): { signal: AbortSignal; done: () => void } {
  const ac = new AbortController();
  const onSig = () => {
    ac.abort(new Error('interrupted (SIGINT); no output written'));
  };
  process.once('SIGINT', onSig);
  process.once('SIGTERM', onSig);
  return {
    signal: ac.signal,
    done: () => {
      process.removeListener('SIGINT', onSig);
      process.removeListener('SIGTERM', onSig);
    },
  };
}

const convertUsage = `Usage: vqalab data convert --questions FILE [--annotations FILE] --image-dir DIR --output FILE [options]

Converts VQAv2 official JSON (questions + annotations) and a COCO image folder to Parquet, streaming
(the 330 MB train annotations are never held whole). Flags as the seed's data_utils.py convert.
test2015 / test-dev2015 have no annotations: leave --annotations out (answers are then empty).

Columns: id, image_path (absolute), question, answer (most common of the 10), answers (the 10),
multiple_choice_answer, answer_type, question_type, image_id.

Options:
  --questions FILE      v2_OpenEnded_mscoco_<split>_questions.json
  --annotations FILE    v2_mscoco_<split>_annotations.json (not for test splits)
  --image-dir DIR       the split's COCO images (COCO_<split>_<12-digit id>.jpg)
  --output FILE         the Parquet file to write (atomically: all or nothing)
  --limit N             stop after N rows (debugging)
  --image-prefix P      image file prefix (default COCO_<data_subtype>_ from the questions file)
  --keep-missing        keep rows whose image file is missing (default: skip and report them)
  --row-group-size N    rows per Parquet row group (default 65536)
  --quiet               no progress output
`;

const convertCommand: Command = {
  name: 'convert',
  summary: 'VQAv2 JSON + COCO images -> Parquet (streaming)',
  usage: convertUsage,
  async run(argv) {
    const { opts, positional } = parseArgs('convert', argv, convertUsage);
    if (positional.length) throw new UsageError(`convert: unexpected argument "${positional[0]}"`);
    for (const k of ['questions', 'image-dir', 'output'])
      if (opts[k] === undefined) throw new UsageError(`convert: --${k} is required`);
    const { signal, done } = abortOnSigint();
    try {
      const r = await convertVqav2({
        questions: opts.questions as string,
        annotations: opts.annotations as string | undefined,
        imageDir: opts['image-dir'] as string,
        output: opts.output as string,
        limit: opts.limit as number | undefined,
        imagePrefix: opts['image-prefix'] as string | undefined,
        keepMissingImages: Boolean(opts['keep-missing']),
        rowGroupSize: (opts['row-group-size'] as number | undefined) || undefined,
        quiet: Boolean(opts.quiet),
        signal,
      });
      const out = process.stdout;
      out.write(
        `data convert: ${r.rows} rows (${r.rowGroups} row groups, ${(r.bytes / 1e6).toFixed(1)} MB) -> ${r.output} in ${r.seconds.toFixed(1)} s\n`,
      );
      out.write(`  questions ${r.questions}, annotations ${r.annotations}${r.subtype ? `, split ${r.subtype}` : ''}\n`);
      if (r.missingImages)
        out.write(`  skipped ${r.missingImages} rows whose image is missing, e.g. ${r.missingExamples.join('; ')}\n`);
      if (r.unannotated)
        out.write(
          `  skipped ${r.unannotated} questions without annotations, e.g. question_id ${r.unannotatedExamples.join(', ')}\n`,
        );
      return 0;
    } catch (err) {
      if (signal.aborted) {
        process.stderr.write(`vqalab data convert: ${(err as Error).message}\n`);
        return 130;
      }
      throw new UsageError(`convert: ${(err as Error).message}`, 1);
    } finally {
      done();
    }
  },
};

const verifyUsage = `Usage: vqalab data verify FILE [--drop-bad OUT] [options]

Checks a VQA Parquet file: the schema, duplicate ids, empty questions, and every image (missing, or
not decodable by sharp). Prints each problem with its row, id and field, then a summary by answer
type. Exits 1 when any row is bad (2 when the file cannot be read as a VQA table).

Options:
  --drop-bad OUT    also write the good rows to OUT (a duplicate id keeps its first row)
  --no-decode       only check that image files exist (fast)
  --max-issues N    how many problems to print (default 20)
  --file FILE       same as FILE (the seed's data_utils.py verify flag)
  --max-image-pixels N  most pixels per image, read from its header before decoding
                    (default 16777216 = 4096x4096, as vqalab serve)
  --model DIR       also build each row's prompt as training does (DIR's chat template and image
                    processor) and check it fits DIR's context
  --max-sequence-length N  the context to check against (default: the model's)
  --max-new-tokens N       completion tokens a run adds after the prompt (default 1)
  --n-samples N     accepted for the seed's data_utils.py verify; every row is checked
  --quiet           no progress output
`;

const verifyCommand: Command = {
  name: 'verify',
  summary: 'check a VQA Parquet file (schema, ids, questions, images)',
  usage: verifyUsage,
  async run(argv) {
    const { opts, positional } = parseArgs('verify', argv, verifyUsage);
    const file = (opts.file as string | undefined) ?? positional[0];
    if (!file) throw new UsageError('verify: missing FILE');
    if (positional.length > (opts.file ? 0 : 1)) throw new UsageError(`verify: one FILE expected`);
    const { signal, done } = abortOnSigint();
    try {
      const r = await verifyDataset(file, {
        dropBad: opts['drop-bad'] as string | undefined,
        decodeImages: !opts['no-decode'],
        quiet: Boolean(opts.quiet),
        signal,
        maxImagePixels: opts['max-image-pixels'] as number | undefined,
        model: opts.model as string | undefined,
        maxSequenceLength: opts['max-sequence-length'] as number | undefined,
        maxNewTokens: opts['max-new-tokens'] as number | undefined,
      });
      process.stdout.write(formatVerifyReport(r, (opts['max-issues'] as number | undefined) ?? 20));
      return r.badRows === 0 ? 0 : 1;
    } catch (err) {
      throw new UsageError(`verify: ${(err as Error).message}`, 2);
    } finally {
      done();
    }
  },
};

const synthUsage = `Usage: vqalab data synth --out DIR [options]

Generates the synthetic "shapes" VQA set (the embedded default; no download): images of shapes
drawn with sharp, questions of six families (color, shape, count, exist, position, compare) with
10 annotator answers each. Writes DIR/synth.parquet and DIR/images/*.png. Same options and seed,
byte-identical files.

Options:
  --out DIR              output folder (created; a previous synth output there is replaced)
  --images N             number of images (default 1000)
  --questions-per-image N  questions about each image (default 1)
  --seed N               random seed (default 0)
  --difficulty D         ${SYNTH_DIFFICULTIES.join(' | ')} (default easy)
  --image-size N         image side in pixels (default 112)
  --families LIST        comma-separated subset of ${SYNTH_FAMILIES.join(',')}
  --show N               print N samples afterwards (default 5)
  --quiet                no progress output
`;

const synthCommand: Command = {
  name: 'synth',
  summary: 'generate the synthetic shapes VQA set',
  usage: synthUsage,
  async run(argv) {
    const { opts, positional } = parseArgs('synth', argv, synthUsage);
    if (positional.length) throw new UsageError(`synth: unexpected argument "${positional[0]}"`);
    if (!opts.out) throw new UsageError('synth: --out DIR is required');
    const { signal, done } = abortOnSigint();
    try {
      const r = await writeSynth(opts.out as string, {
        images: opts.images as number | undefined,
        questionsPerImage: opts['questions-per-image'] as number | undefined,
        seed: opts.seed as number | undefined,
        difficulty: opts.difficulty as SynthDifficulty | undefined,
        imageSize: opts['image-size'] as number | undefined,
        families: opts.families
          ? (String(opts.families)
              .split(',')
              .map((s) => s.trim()) as SynthFamily[])
          : undefined,
        quiet: Boolean(opts.quiet),
        signal,
      });
      process.stdout.write(
        `data synth: ${r.samples} samples, ${r.images} images -> ${r.parquet} in ${r.seconds.toFixed(1)} s\n`,
      );
      const ds = await VqaDataset.fromParquet(r.parquet);
      process.stdout.write(describeDataset(ds, (opts.show as number | undefined) ?? 5));
      return 0;
    } catch (err) {
      if (signal.aborted) {
        process.stderr.write(`vqalab data synth: ${(err as Error).message}\n`);
        return 130;
      }
      throw new UsageError(`synth: ${(err as Error).message}`, 1);
    } finally {
      done();
    }
  },
};

const synthVideoUsage = `Usage: vqalab data synth-video --out DIR [options]

Generates the synthetic video set: clips of one circle as folders of PNG frames (video.json gives
their fps), with questions the first frame does not answer: "What color is the circle at the end?"
(color: it changes colour once), "Which way does the circle move?" (motion: left or right, from the
middle) and "How many times does the circle blink?" (blink: 1-3). Writes DIR/synth-video.parquet
(video_path, family; image_path is each clip's first frame) and DIR/videos/vid_*/. Same options and
seed, byte-identical files.

Options:
  --out DIR              output folder (created; a previous output there is replaced)
  --videos N             number of clips (default 200)
  --frames N             frames per clip, even, at least 6 (default 14; 3 blinks need 14)
  --frame-size N         frame side in pixels (default 56)
  --fps N                frame rate written to video.json (default 2)
  --families LIST        comma-separated subset of ${SYNTH_VIDEO_FAMILIES.join(',')}
  --seed N               random seed (default 0)
  --show N               print N samples afterwards (default 5)
`;

const synthVideoCommand: Command = {
  name: 'synth-video',
  summary: 'generate the synthetic video set (moving and blinking circles)',
  usage: synthVideoUsage,
  async run(argv) {
    const { opts, positional } = parseArgs('synth-video', argv, synthVideoUsage);
    if (positional.length) throw new UsageError(`synth-video: unexpected argument "${positional[0]}"`);
    if (!opts.out) throw new UsageError('synth-video: --out DIR is required');
    try {
      const t0 = performance.now();
      const r = await writeSynthVideo(opts.out as string, {
        videos: opts.videos as number | undefined,
        frames: opts.frames as number | undefined,
        frameSize: opts['frame-size'] as number | undefined,
        fps: opts.fps as number | undefined,
        seed: opts.seed as number | undefined,
        families: opts.families
          ? (String(opts.families)
              .split(',')
              .map((x) => x.trim()) as SynthVideoFamily[])
          : undefined,
      });
      process.stdout.write(
        `data synth-video: ${r.samples.length} clips -> ${r.parquet} in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`,
      );
      process.stdout.write(
        describeDataset(await VqaDataset.fromParquet(r.parquet), (opts.show as number | undefined) ?? 5),
      );
      return 0;
    } catch (err) {
      throw new UsageError(`synth-video: ${(err as Error).message}`, 1);
    }
  },
};

/** A look at a dataset: size, columns, answer types, fingerprint, first samples. */
export function describeDataset(ds: VqaDataset, n: number): string {
  const lines = [`${ds.source}: ${ds.size} samples, fingerprint ${ds.fingerprint().slice(0, 16)}`];
  const types = [...ds.countBy('answerType')].map(([k, v]) => `${k} ${v}`).join(', ');
  lines.push(`  answer types: ${types}`);
  const families =
    ds.size && ds.get(0).extra?.family !== undefined
      ? [...ds.countBy((s) => String(s.extra?.family))].map(([k, v]) => `${k} ${v}`).join(', ')
      : '';
  if (families) lines.push(`  families: ${families}`);
  for (let i = 0; i < Math.min(n, ds.size); i++) {
    const s = ds.get(i);
    const counts = new Map<string, number>();
    for (const a of s.answers) counts.set(a, (counts.get(a) ?? 0) + 1);
    const answers = [...counts].map(([a, c]) => (c > 1 ? `${a} x${c}` : a)).join(', ');
    const shown = s.videoPaths?.length
      ? `${s.videoPaths.map((v) => path.basename(v)).join(', ')} (video)`
      : path.basename(s.imagePath);
    lines.push(`  [${i}] ${s.id}  ${shown}  Q: ${s.question}  A: ${s.answer}  (${answers})`);
  }
  return lines.join('\n') + '\n';
}

const showUsage = `Usage: vqalab data show FILE [--n N]

Prints a look at a VQA Parquet file: size, answer types, fingerprint and the first N samples.

Options:
  --n N    how many samples to print (default 5)
`;

const showCommand: Command = {
  name: 'show',
  summary: 'print a look at a VQA Parquet file',
  usage: showUsage,
  async run(argv) {
    const { opts, positional } = parseArgs('show', argv, showUsage);
    if (positional.length !== 1) throw new UsageError('show: one FILE expected');
    try {
      process.stdout.write(
        describeDataset(await VqaDataset.fromParquet(positional[0]!), (opts.n as number | undefined) ?? 5),
      );
      return 0;
    } catch (err) {
      throw new UsageError(`show: ${(err as Error).message}`, 1);
    }
  },
};

const subs = [convertCommand, verifyCommand, synthCommand, synthVideoCommand, showCommand];

const usage = `Usage: vqalab data <command> [options]

VQA datasets: Parquet files of the columns id, image_path, question, answer (+ answers, ...).

Commands:
${subs.map((c) => `  ${c.name.padEnd(11)}  ${c.summary}`).join('\n')}

Run "vqalab data <command> --help" for its options.
`;

export const dataCommand: Command = {
  name: 'data',
  summary: 'datasets: convert VQAv2, verify, generate the synthetic set, show',
  usage,
  run: (argv) => dispatchSubcommand('data', usage, subs, argv),
};

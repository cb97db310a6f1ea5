/**
 * The official VQA accuracy of one question, as GT-Vision-Lab's vqaEval.py (final version) computes
 * it — including its quirks. docs/vqa-metric.md lists every rule with an example; the tests in
 * test/eval/ check each against values the official code produced.
 *
 * In short, for a prediction and the annotators' answers (10 in VQAv2):
 * 1. `\n` and `\t` become spaces and everything is strip()ped (answers and prediction).
 * 2. Only if the answers are not all identical after step 1 are answers and prediction normalised:
 *    punctuation (see {@link processPunctuation}), then lower-case, number words → digits, articles
 *    dropped, contractions restored (see {@link processDigitArticle}).
 * 3. For each answer i, the prediction's accuracy against the other answers is min(#equal / 3, 1);
 *    the question's accuracy is the mean of these over i.
 */
import { pySum, pythonDialect, type Dialect, type PythonDialect } from './python.js';

/** Characters processPunctuation removes or turns into spaces (the official list, in its order). */
export const PUNCTUATION: readonly string[] = [
  ';',
  '/',
  '[',
  ']',
  '"',
  '{',
  '}',
  '(',
  ')',
  '=',
  '+',
  '\\',
  '_',
  '-',
  '>',
  '<',
  '@',
  '`',
  ',',
  '?',
  '!',
];

/** Number words the official code maps to digits (note 'none' → '0'; nothing above ten). */
export const NUMBER_WORDS: ReadonlyMap<string, string> = new Map([
  ['none', '0'],
  ['zero', '0'],
  ['one', '1'],
  ['two', '2'],
  ['three', '3'],
  ['four', '4'],
  ['five', '5'],
  ['six', '6'],
  ['seven', '7'],
  ['eight', '8'],
  ['nine', '9'],
  ['ten', '10'],
]);

export const ARTICLES: ReadonlySet<string> = new Set(['a', 'an', 'the']);

/**
 * The official contractions table, key=value. Its oddities are kept: keys with capitals (Im, Ive,
 * Id've, I'dve) can never match a lower-cased word; "somebody'd" maps the wrong way, to "somebodyd";
 * "let's" and "she's" map to themselves.
 */
const CONTRACTION_PAIRS = `
'ow'sat='ow's'at 'ows'at='ow's'at I'dve=I'd've Id've=I'd've Im=I'm Ive=I've aint=ain't arent=aren't
cant=can't couldn'tve=couldn't've couldnt=couldn't couldnt've=couldn't've couldve=could've
didnt=didn't doesnt=doesn't dont=don't hadn'tve=hadn't've hadnt=hadn't hadnt've=hadn't've
hasnt=hasn't havent=haven't he'dve=he'd've hed=he'd hed've=he'd've hes=he's howd=how'd howll=how'll
hows=how's isnt=isn't it'dve=it'd've itd=it'd itd've=it'd've itll=it'll let's=let's maam=ma'am
mightn'tve=mightn't've mightnt=mightn't mightnt've=mightn't've mightve=might've mustnt=mustn't
mustve=must've neednt=needn't notve=not've oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at
shant=shan't she'dve=she'd've she's=she's shed've=she'd've shouldn'tve=shouldn't've
shouldnt=shouldn't shouldnt've=shouldn't've shouldve=should've somebody'd=somebodyd
somebody'dve=somebody'd've somebodyd've=somebody'd've somebodyll=somebody'll somebodys=somebody's
someone'dve=someone'd've someoned=someone'd someoned've=someone'd've someonell=someone'll
someones=someone's something'dve=something'd've somethingd=something'd somethingd've=something'd've
somethingll=something'll thats=that's there'dve=there'd've thered=there'd thered've=there'd've
therere=there're theres=there's they'dve=they'd've theyd=they'd theyd've=they'd've theyll=they'll
theyre=they're theyve=they've twas='twas wasnt=wasn't we'dve=we'd've wed've=we'd've werent=weren't
weve=we've whatll=what'll whatre=what're whats=what's whatve=what've whens=when's whered=where'd
wheres=where's whereve=where've who'dve=who'd've whod=who'd whod've=who'd've wholl=who'll whos=who's
whove=who've whyll=why'll whyre=why're whys=why's wont=won't wouldn'tve=wouldn't've
wouldnt=wouldn't wouldnt've=wouldn't've wouldve=would've y'all'dve=y'all'd've y'alld've=y'all'd've
y'allll=y'all'll yall=y'all yall'd've=y'all'd've yall'll=y'all'll you'dve=you'd've youd=you'd
youd've=you'd've youll=you'll youre=you're youve=you've`;

export const CONTRACTIONS: ReadonlyMap<string, string> = new Map(
  CONTRACTION_PAIRS.trim()
    .split(/\s+/)
    .map((pair) => {
      const eq = pair.indexOf('=');
      return [pair.slice(0, eq), pair.slice(eq + 1)] as [string, string];
    }),
);

/** The official code's `periodStrip.sub("", text, re.UNICODE)` passes re.UNICODE (32) as `count`. */
export const MAX_PERIODS_REMOVED = 32;

interface Compiled {
  d: Dialect;
  /** (\d)(,)(\d) anywhere. */
  digitCommaDigit: RegExp;
}
const compiled = new Map<PythonDialect, Compiled>();
function compile(dialect: PythonDialect): Compiled {
  let c = compiled.get(dialect);
  if (!c) {
    const d = pythonDialect(dialect);
    c = { d, digitCommaDigit: new RegExp(`[${d.digitClass}],[${d.digitClass}]`, 'u') };
    compiled.set(dialect, c);
  }
  return c;
}

const ANY_PUNCT_OR_PERIOD = /[;/[\]"{}()=+\\_\-><@`,?!.]/;
// First and last characters that are certainly not whitespace in any dialect (printable ASCII).
const isPlain = (c: number) => c > 0x20 && c < 0x7f;

/** `\n` and `\t` → space, then strip() — applied to every answer and the prediction first. */
export function cleanWhitespace(text: string, dialect: PythonDialect = 'python2'): string {
  if (
    text.length > 0 &&
    isPlain(text.charCodeAt(0)) &&
    isPlain(text.charCodeAt(text.length - 1)) &&
    !text.includes('\n') &&
    !text.includes('\t')
  )
    return text;
  let t = text;
  if (t.includes('\n')) t = t.replaceAll('\n', ' ');
  if (t.includes('\t')) t = t.replaceAll('\t', ' ');
  return compile(dialect).d.strip(t);
}

/**
 * The official processPunctuation:
 * - if the text contains digit,digit anywhere (e.g. "1,000"), every listed punctuation character
 *   is deleted;
 * - otherwise each character p is deleted when the *original* text contains "p " or " p", and
 *   replaced by a space when it does not ("a-b" → "a b", but "a - b" → "a  b");
 * - then periods not followed by a digit are deleted — at most the first 32 of them. The pattern
 *   `(?!<=\d)(\.)(?!\d)` was meant to keep decimal points, but `(?!<=\d)` is a look-ahead for "<="
 *   (always true before "."), so only `\.(?!\d)` acts: "2.5" keeps its point, "5." and "a.b" lose it,
 *   ".5" and "a.5" keep it.
 * Apostrophes, colons, '#', '$', '%', '&', '*', '|', '~', '^' and '.' (handled above) are not in the list.
 */
export function processPunctuation(text: string, dialect: PythonDialect = 'python2'): string {
  if (!ANY_PUNCT_OR_PERIOD.test(text)) return text;
  const { d, digitCommaDigit } = compile(dialect);
  const deleteAll = digitCommaDigit.test(text);
  let out = text;
  for (const p of PUNCTUATION) {
    if (!out.includes(p)) continue;
    const remove = deleteAll || text.includes(p + ' ') || text.includes(' ' + p);
    out = out.replaceAll(p, remove ? '' : ' ');
  }
  if (!out.includes('.')) return out;
  let result = '';
  let removed = 0;
  let from = 0;
  for (let i = out.indexOf('.'); i !== -1 && removed < MAX_PERIODS_REMOVED; i = out.indexOf('.', i + 1)) {
    const next = out.codePointAt(i + 1);
    if (next !== undefined && d.isDigit(next)) continue;
    result += out.slice(from, i);
    from = i + 1;
    removed++;
  }
  return result + out.slice(from);
}

/**
 * The official processDigitArticle: lower(), split() on whitespace, number words → digits
 * ({@link NUMBER_WORDS}), articles dropped (after the number mapping), then each remaining word
 * looked up once in {@link CONTRACTIONS}; words joined by single spaces.
 */
export function processDigitArticle(text: string, dialect: PythonDialect = 'python2'): string {
  const { d } = compile(dialect);
  const words: string[] = [];
  for (const w of d.split(d.lower(text))) {
    const mapped = NUMBER_WORDS.get(w) ?? w;
    if (!ARTICLES.has(mapped)) words.push(CONTRACTIONS.get(mapped) ?? mapped);
  }
  return words.join(' ');
}

/** processPunctuation then processDigitArticle: what the official code does when answers differ. */
export function normalizeAnswer(text: string, dialect: PythonDialect = 'python2'): string {
  return processDigitArticle(processPunctuation(text, dialect), dialect);
}

export interface VqaScoreOptions {
  /** Which interpreter's behaviour to reproduce; default 'python2' (the official file as published). */
  dialect?: PythonDialect;
  /**
   * The official code leaves answer i out by dict inequality (`item != gtAnsDatum`), so answers whose
   * whole records are equal (same text *and* same other fields, e.g. no answer_id) are left out
   * together. `entryKeys[i]` is a canonical form of answer i's record without its text; equal keys
   * and equal texts mean equal records. Absent: all records differ (VQAv2 answers have distinct
   * answer_ids).
   */
  entryKeys?: readonly string[];
}

export interface VqaScore {
  /** Mean over answers i of min(#matching others / 3, 1), in [0, 1]. */
  accuracy: number;
  /** How many answers equal the processed prediction. */
  matches: number;
  /** Whether answers and prediction were normalised (the answers were not all identical). */
  normalized: boolean;
  /** The prediction as compared (whitespace-cleaned, and normalised when `normalized`). */
  prediction: string;
  /** The answers as compared (the official code writes these back into its annotation records). */
  answers: string[];
}

/**
 * A set of answers prepared once for scoring many predictions (GRPO scores G completions of one
 * sample against the same answers): whitespace cleaned, normalised when they differ.
 */
export interface PreparedAnswers {
  readonly dialect: PythonDialect;
  readonly answers: readonly string[];
  readonly normalized: boolean;
  /** answer text → how many answers have it (for the common case without entryKeys). */
  readonly counts: ReadonlyMap<string, number>;
  readonly entryKeys?: readonly string[];
}

export function prepareAnswers(rawAnswers: readonly string[], options: VqaScoreOptions = {}): PreparedAnswers {
  const dialect = options.dialect ?? 'python2';
  let answers = rawAnswers.map((a) => cleanWhitespace(a, dialect));
  const normalized = new Set(answers).size > 1;
  if (normalized) answers = answers.map((a) => normalizeAnswer(a, dialect));
  const counts = new Map<string, number>();
  for (const a of answers) counts.set(a, (counts.get(a) ?? 0) + 1);
  return { dialect, answers, normalized, counts, entryKeys: options.entryKeys };
}

/** Process a prediction the way the official code does for these answers. */
export function preparePrediction(prediction: string, prepared: PreparedAnswers): string {
  const p = cleanWhitespace(prediction, prepared.dialect);
  return prepared.normalized ? normalizeAnswer(p, prepared.dialect) : p;
}

// Scratch buffers for the per-answer accuracies (the official list gtAcc) and which are the int 1.
let accBuf = new Float64Array(16);
let intBuf: boolean[] = [];

/** Score an already processed prediction against prepared answers (the official inner loop). */
export function scorePrepared(
  processedPrediction: string,
  prepared: PreparedAnswers,
): { accuracy: number; matches: number } {
  const { answers, entryKeys } = prepared;
  const n = answers.length;
  if (n === 0)
    throw new RangeError(
      'the official VQA accuracy needs at least one answer (the official code divides by their number)',
    );
  const matches = prepared.counts.get(processedPrediction) ?? 0;
  if (accBuf.length < n) {
    accBuf = new Float64Array(n * 2);
  }
  intBuf.length = n;
  for (let i = 0; i < n; i++) {
    let k: number;
    if (!entryKeys) {
      k = matches - (answers[i] === processedPrediction ? 1 : 0);
    } else {
      // Leave out every record equal to record i (text and other fields), as `item != gtAnsDatum` does.
      k = 0;
      for (let j = 0; j < n; j++) {
        if (answers[j] === processedPrediction && !(answers[j] === answers[i] && entryKeys[j] === entryKeys[i])) k++;
      }
    }
    // min(1, float(k)/3) returns the int 1 when k >= 3 (min keeps its first argument on ties).
    if (k >= 3) {
      accBuf[i] = 1;
      intBuf[i] = true;
    } else {
      accBuf[i] = k / 3;
      intBuf[i] = false;
    }
  }
  const compensated = prepared.dialect === 'python3.12';
  const sum = pySum(n === accBuf.length ? accBuf : accBuf.subarray(0, n), compensated, intBuf);
  return { accuracy: sum / n, matches };
}

/**
 * The official accuracy of one prediction against the annotators' answers, in [0, 1] (the
 * official code reports 100× this, rounded, per question).
 *
 * @example
 * scoreVqa('Two', ['2', '2', 'two', '2', '3', '2', '2', '2', '2', '2']).accuracy // 1
 */
export function scoreVqa(prediction: string, answers: readonly string[], options: VqaScoreOptions = {}): VqaScore {
  const prepared = prepareAnswers(answers, options);
  const processed = preparePrediction(prediction, prepared);
  const { accuracy, matches } = scorePrepared(processed, prepared);
  return { accuracy, matches, normalized: prepared.normalized, prediction: processed, answers: [...prepared.answers] };
}

// ───────────── Scoring that fits the data: fewer than 10 answers ─────────────

/**
 * Samples with at least this many reference answers (VQAv2's 10 annotators) are scored by the
 * official formula; samples with fewer (the seed's 4-column Parquet with one `answer`,
 * ChartQA-style sets, a few paraphrases) by normalised exact match against any reference. The
 * official formula needs 10: with one answer it can never score above 0 (leaving the only answer
 * out leaves nothing to match), with 3 identical answers a right prediction gets 2/3.
 */
export const OFFICIAL_ANSWER_COUNT = 10;

/** Which rule scored a prediction: the official 10-annotator formula, or exact match (fewer answers). */
export type ScoringRule = 'official' | 'exact-match';

/** References prepared once for scoring many predictions under the rule their count selects. */
export type PreparedReferences =
  | { readonly rule: 'official'; readonly prepared: PreparedAnswers }
  | {
      readonly rule: 'exact-match';
      readonly dialect: PythonDialect;
      readonly answers: readonly string[];
      readonly counts: ReadonlyMap<string, number>;
    };

/**
 * The official normalisation applied unconditionally: `\n`/`\t` → space, strip(), then
 * processPunctuation and processDigitArticle ("The Red." → "red", "two" → "2").
 */
export function normalizeForMatch(text: string, dialect: PythonDialect = 'python2'): string {
  return normalizeAnswer(cleanWhitespace(text, dialect), dialect);
}

/** Prepare references: the official formula for ≥ {@link OFFICIAL_ANSWER_COUNT} answers, else exact match. */
export function prepareReferences(answers: readonly string[], options: VqaScoreOptions = {}): PreparedReferences {
  if (answers.length === 0) throw new RangeError('scoring needs at least one reference answer');
  if (answers.length >= OFFICIAL_ANSWER_COUNT) return { rule: 'official', prepared: prepareAnswers(answers, options) };
  const dialect = options.dialect ?? 'python2';
  const normalized = answers.map((a) => normalizeForMatch(a, dialect));
  const counts = new Map<string, number>();
  for (const a of normalized) counts.set(a, (counts.get(a) ?? 0) + 1);
  return { rule: 'exact-match', dialect, answers: normalized, counts };
}

/** Score a raw prediction against prepared references. */
export function scoreReferences(prediction: string, refs: PreparedReferences): VqaScore & { rule: ScoringRule } {
  if (refs.rule === 'official') {
    const processed = preparePrediction(prediction, refs.prepared);
    const { accuracy, matches } = scorePrepared(processed, refs.prepared);
    return {
      accuracy,
      matches,
      normalized: refs.prepared.normalized,
      prediction: processed,
      answers: [...refs.prepared.answers],
      rule: 'official',
    };
  }
  const p = normalizeForMatch(prediction, refs.dialect);
  const matches = refs.counts.get(p) ?? 0;
  return {
    accuracy: matches > 0 ? 1 : 0,
    matches,
    normalized: true,
    prediction: p,
    answers: [...refs.answers],
    rule: 'exact-match',
  };
}

/**
 * The accuracy vqalab reports for one prediction, in [0, 1]: the official VQA formula when the
 * sample has 10 or more answers (VQAv2; identical to {@link scoreVqa}), otherwise 1 when the
 * normalised prediction equals any normalised reference, else 0 (docs/vqa-metric.md, "Fewer than
 * 10 answers"). Used by the `vqaAccuracy()` reward, `Trainer.evaluate()` and `vqalab eval-policy`.
 *
 * @example
 * scoreAnswer('The red.', ['red']).accuracy // 1 (exact match after normalisation)
 * scoreAnswer('Two', ['2', '2', 'two', '2', '3', '2', '2', '2', '2', '2']).accuracy // 1 (official)
 */
export function scoreAnswer(
  prediction: string,
  answers: readonly string[],
  options: VqaScoreOptions = {},
): VqaScore & { rule: ScoringRule } {
  return scoreReferences(prediction, prepareReferences(answers, options));
}

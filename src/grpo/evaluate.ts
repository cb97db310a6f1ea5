/**
 * Evaluation summaries in the official VQA evaluator's shape: overall and per answer type, each
 * 100 × the mean per-question accuracy, rounded to 2 decimals.
 */

export interface EvalRow {
  id: string;
  question: string;
  prediction: string;
  answers: string[];
  answerType: string;
  /** Per-question accuracy in [0, 1] (the official metric's min(#matches / 3, 1) averaged over leave-one-out subsets). */
  accuracy: number;
}

export interface EvalSummary {
  split: string;
  /** Overall accuracy in percent, rounded to 2 decimals like the official evaluator. */
  overall: number;
  perAnswerType: Record<string, number>;
  n: number;
  rows: EvalRow[];
  seconds: number;
}

const round2 = (x: number) => Math.round(x * 100) / 100;

export function summarize(split: string, rows: EvalRow[], seconds: number): EvalSummary {
  const byType = new Map<string, number[]>();
  for (const r of rows) {
    const list = byType.get(r.answerType) ?? [];
    list.push(r.accuracy);
    byType.set(r.answerType, list);
  }
  const pct = (xs: number[]) => (xs.length === 0 ? NaN : round2((100 * xs.reduce((a, b) => a + b, 0)) / xs.length));
  const perAnswerType: Record<string, number> = {};
  for (const [t, xs] of [...byType].sort((a, b) => a[0].localeCompare(b[0]))) perAnswerType[t] = pct(xs);
  return { split, overall: pct(rows.map((r) => r.accuracy)), perAnswerType, n: rows.length, rows, seconds };
}

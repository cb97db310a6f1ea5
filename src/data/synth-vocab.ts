/**
 * The closed language of the synthetic "shapes" VQA set: shapes, colours, question templates and
 * the answer variants that simulated annotators give. The generator (synth.ts) draws only from
 * these tables, so {@link synthVocabulary} can list every token a synth question or answer can
 * contain. The trainer builds the embedded model's tiny tokenizer from that list: keep it stable
 * (add words at the end of a table, never rename or remove one).
 *
 * Tokenisation rule the list is built for: split a question or answer on whitespace, and split a
 * trailing "?" off its word. Questions are sentence-cased ("What color is the circle?"); answers
 * are lower case. Every resulting token is in `synthVocabulary()`.
 */

/** Shape kinds, singular, in the order the generator indexes them. */
export const SYNTH_SHAPES = ['circle', 'square', 'triangle', 'star', 'diamond'] as const;
export type SynthShape = (typeof SYNTH_SHAPES)[number];

/** Plural of each shape (questions say "How many circles are there?"). */
export const SYNTH_SHAPE_PLURALS: Record<SynthShape, string> = {
  circle: 'circles',
  square: 'squares',
  triangle: 'triangles',
  star: 'stars',
  diamond: 'diamonds',
};

/** Colour names with the fill used to draw them (sRGB hex). */
export const SYNTH_COLORS = {
  red: '#d62728',
  green: '#2ca02c',
  blue: '#1f5fd6',
  yellow: '#f2d21b',
  purple: '#8e44ad',
  orange: '#ff7f0e',
  black: '#202020',
} as const;
export type SynthColor = keyof typeof SYNTH_COLORS;
export const SYNTH_COLOR_NAMES = Object.keys(SYNTH_COLORS) as SynthColor[];

/**
 * What a minority of annotators answers instead of the canonical word (real VQAv2 answer lists
 * have exactly this kind of spread: "blue" ×8, "light blue", "dark blue").
 */
export const SYNTH_COLOR_VARIANTS: Record<SynthColor, readonly string[]> = {
  red: ['dark red', 'orange'],
  green: ['dark green', 'light green'],
  blue: ['dark blue', 'light blue'],
  yellow: ['gold', 'orange'],
  purple: ['violet', 'pink'],
  orange: ['dark orange', 'red'],
  black: ['dark gray', 'gray'],
};

export const SYNTH_SHAPE_VARIANTS: Record<SynthShape, readonly string[]> = {
  circle: ['round', 'oval'],
  square: ['rectangle', 'box'],
  triangle: ['triangular', 'pyramid'],
  star: ['star shape', 'stars'],
  diamond: ['rhombus', 'square'],
};

export const SYNTH_SIDE_VARIANTS: Record<'left' | 'right', readonly string[]> = {
  left: ['left side', 'on left'],
  right: ['right side', 'on right'],
};

/** Number words for 0..SYNTH_MAX_COUNT ("2" and "two" both appear in answer lists). */
export const SYNTH_NUMBER_WORDS = [
  'zero',
  'one',
  'two',
  'three',
  'four',
  'five',
  'six',
  'seven',
  'eight',
  'nine',
  'ten',
] as const;
/** Most shapes one image can hold (hard difficulty); counts never exceed it. */
export const SYNTH_MAX_COUNT = 10;

/** Question families, with the VQAv2 answer type each maps to. */
export const SYNTH_FAMILIES = ['color', 'shape', 'count', 'exist', 'position', 'compare'] as const;
export type SynthFamily = (typeof SYNTH_FAMILIES)[number];
export const SYNTH_ANSWER_TYPE: Record<SynthFamily, 'yes/no' | 'number' | 'other'> = {
  color: 'other',
  shape: 'other',
  count: 'number',
  exist: 'yes/no',
  position: 'other',
  compare: 'yes/no',
};

/**
 * Question templates per family. Slots: {shape} {shapes} (plural) {color} and a second object
 * {shape2} {shapes2} {color2}. The VQAv2-style question_type of a template is its text up to the
 * first slot, lower-cased and trimmed ("what color is the").
 */
export const SYNTH_TEMPLATES: Record<SynthFamily, readonly string[]> = {
  color: ['What color is the {shape}?', 'What is the color of the {shape}?'],
  shape: ['What shape is the {color} object?', 'What is the shape of the {color} object?'],
  count: ['How many {shapes} are there?', 'How many {color} shapes are there?', 'How many shapes are there?'],
  exist: ['Is there a {color} {shape}?', 'Are there any {shapes}?'],
  position: [
    'Is the {color} {shape} on the left or right of the {color2} {shape2}?',
    'Which side of the {color2} {shape2} is the {color} {shape} on?',
  ],
  compare: [
    'Are there more {shapes} than {shapes2}?',
    'Are there fewer {shapes} than {shapes2}?',
    'Are there more {color} shapes than {color2} shapes?',
    'Are there fewer {color} shapes than {color2} shapes?',
  ],
};

/** Split text into tokens by the rule above (whitespace, and a trailing "?" on its own). */
export function synthTokens(text: string): string[] {
  const out: string[] = [];
  for (const w of text.split(/\s+/)) {
    if (w === '') continue;
    if (w.length > 1 && w.endsWith('?')) out.push(w.slice(0, -1), '?');
    else out.push(w);
  }
  return out;
}

let cached: string[] | undefined;

/**
 * Every token that can appear in a synth question or answer (see the tokenisation rule above),
 * sorted, without duplicates. Derived from the tables in this module, so the generator cannot use
 * a word the list lacks (a test checks thousands of generated samples against it).
 */
export function synthVocabulary(): string[] {
  if (cached) return [...cached];
  const words = new Set<string>();
  const add = (text: string) => {
    for (const t of synthTokens(text)) words.add(t);
  };
  for (const templates of Object.values(SYNTH_TEMPLATES)) {
    for (const t of templates) add(t.replace(/\{[a-z0-9]+\}/g, ' '));
  }
  for (const s of SYNTH_SHAPES) {
    add(s);
    add(SYNTH_SHAPE_PLURALS[s]);
    SYNTH_SHAPE_VARIANTS[s].forEach(add);
  }
  for (const c of SYNTH_COLOR_NAMES) {
    add(c);
    SYNTH_COLOR_VARIANTS[c].forEach(add);
  }
  for (const side of ['left', 'right'] as const) {
    add(side);
    SYNTH_SIDE_VARIANTS[side].forEach(add);
  }
  for (let n = 0; n <= SYNTH_MAX_COUNT; n++) {
    add(String(n));
    add(SYNTH_NUMBER_WORDS[n]!);
  }
  add('yes');
  add('no');
  cached = [...words].sort();
  return [...cached];
}

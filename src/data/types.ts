/**
 * The sample every layer passes around. A Parquet row of the seed's schema
 * (`id, image_path, question, answer`) maps onto it; VQAv2 conversions fill the optional fields.
 */
export interface VqaSample {
  /** Unique within a dataset; VQAv2's question_id as a string. */
  id: string;
  /** Absolute path of the (first) image. */
  imagePath: string;
  /** All images of a multi-image sample, in prompt order; absent or `[imagePath]` for one image. */
  imagePaths?: string[];
  /**
   * Videos of the sample (folders of frames, src/vision/video.ts), shown after its images; with
   * videos, `imagePath` is a still for previews and only `imagePaths` (if given) are images of the
   * prompt.
   */
  videoPaths?: string[];
  /** Frame rate of the videos' frames when a folder has no video.json. */
  videoFps?: number;
  question: string;
  /** The single reference answer (VQAv2: the most common of the 10). */
  answer: string;
  /** The 10 annotator answers when known (the official metric needs them); else `[answer]`. */
  answers: string[];
  multipleChoiceAnswer?: string;
  /** VQAv2 answer type: "yes/no", "number" or "other". */
  answerType?: string;
  /** VQAv2 question type, e.g. "what color is the". */
  questionType?: string;
  imageId?: number;
  /** Row of the sample in its source table, when it came from one (for messages and reports). */
  row?: number;
  /** Columns of the source table beyond the known ones, kept as read. */
  extra?: Record<string, unknown>;
}

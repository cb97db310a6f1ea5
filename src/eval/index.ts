/** The official VQA accuracy (GT-Vision-Lab vqaEval.py) reproduced exactly; see docs/vqa-metric.md. */
export { formatFixed, pyRound, pySum, pythonDialect, PYTHON_DIALECTS, type Dialect, type PythonDialect } from './python.js';
export {
  ARTICLES, cleanWhitespace, CONTRACTIONS, normalizeAnswer, NUMBER_WORDS, prepareAnswers, preparePrediction, processDigitArticle,
  processPunctuation, PUNCTUATION, scorePrepared, scoreVqa, type PreparedAnswers, type VqaScore, type VqaScoreOptions,
} from './vqa-metric.js';
export {
  checkAnnotations, checkQuestions, checkResults, evaluateVqa, evaluateVqaFiles, pythonEqualityKey, readJsonFile, VqaInputError,
  vqaEvalToJson, vqaEvalToText,
  type Accuracy, type QuestionId, type VqaAnnotation, type VqaAnnotationsFile, type VqaEvalFiles, type VqaEvalOptions,
  type VqaEvalResult, type VqaQuestion, type VqaQuestionsFile, type VqaResult,
} from './vqa-eval.js';
export {
  normalizeForMatch, OFFICIAL_ANSWER_COUNT, prepareReferences, scoreAnswer, scoreReferences, type PreparedReferences, type ScoringRule,
} from './vqa-metric.js';

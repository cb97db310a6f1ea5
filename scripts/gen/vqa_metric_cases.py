#!/usr/bin/env python3
"""Generate test/eval/fixtures/vqa-metric-cases.json: inputs for every normalisation rule and quirk
of the official VQA evaluator, with the values the official code itself produces under each
interpreter. The official code (a checkout of GT-Vision-Lab/VQA) is only read at generation time;
nothing of it is written into this repository.

Usage:
  python3 scripts/gen/vqa_metric_cases.py --official /path/to/VQA \\
    --python2 /root/.pyenv/versions/2.7.18/bin/python \\
    --python3 /root/.pyenv/versions/3.11.7/bin/python3 \\
    --python312 /root/.pyenv/versions/3.12.1/bin/python3 > test/eval/fixtures/vqa-metric-cases.json
"""
import argparse, json, os, re, shutil, subprocess, sys, tempfile

# (rule, text) for processPunctuation / processDigitArticle / both.
TEXTS = [
    ('punct: listed characters become spaces', 'red;blue/green[x]"y"{z}(w)=v+u\\t_s-r>q<p@o`n,m?l!k'),
    ('punct: deleted when the original text has "p " or " p"', 'red - blue'),
    ('punct: "p " anywhere deletes every p', 'red-white -blue'),
    ('punct: " p" anywhere deletes every p', 'left/right /up'),
    ('punct: no space next to p, replaced by a space', 'red-white-blue'),
    ('punct: digit,digit anywhere deletes all punctuation', '1,000 red-blue (x)'),
    ('punct: digit,digit rule', '1,000'),
    ('punct: comma without digits on both sides', 'a,b'),
    ('punct: comma followed by space', '2, 3'),
    ('punct: characters not in the list survive', "it's 10:30 #1 $5 50% a&b a*b a|b ~a ^b"),
    ('period: decimal point kept', '2.5'),
    ('period: trailing period removed', '5.'),
    ('period: between letters removed', 'a.b'),
    ('period: before a digit kept (the lookbehind is really a lookahead)', 'a.5'),
    ('period: leading before digit kept', '.5'),
    ('period: abbreviations', 'U.S.A.'),
    ('period: version-like', '1.2.3.'),
    ('period: only the first 32 are removed (re.UNICODE passed as count)', '.' * 40 + 'x'),
    ('period: 32 limit counts only removed periods', '1.2.' * 20 + 'end.'),
    ('period: exactly 32', 'a.' * 32),
    ('period: 33', 'a.' * 33),
    ('number words', 'two'),
    ('number words: capitalised', 'Two Dogs'),
    ('number words: none is 0', 'none'),
    ('number words: nothing above ten', 'eleven twenty'),
    ('number words: in a phrase', 'one of the ten'),
    ('articles dropped', 'the cat'),
    ('articles: only article', 'a'),
    ('articles: capitalised', 'A Dog and AN apple'),
    ('articles: inside words kept', 'theater another'),
    ('contractions', 'dont'),
    ('contractions: capital keys never match', 'Im Ive Id\'ve'),
    ('contractions: somebody\'d maps the wrong way', "somebody'd"),
    ('contractions: apostrophe forms', "couldn'tve y'allll"),
    ('contractions: identity entries', "let's she's"),
    ('contractions: twas', 'twas oclock'),
    ('whitespace: runs collapse', 'red   \t  blue'),
    ('whitespace: empty', ''),
    ('whitespace: only spaces', '   '),
    ('unicode: dotted capital I', u'\u0130stanbul'),
    ('unicode: final sigma', u'\u039f\u0394\u039f\u03a3'),
    ('unicode: sigma alone', u'\u03a3'),
    ('unicode: sharp s and Kelvin sign', u'\u1e9e \u212a \u00c5'),
    ('unicode: Georgian Mtavruli (Unicode 11)', u'\u1c90\u1c91'),
    ('unicode: Cherokee (lowercase since Unicode 8)', u'\u13a0\u13a1'),
    ('unicode: Deseret (astral)', u'\U00010400'),
    ('unicode: titlecase digraph', u'\u01c5'),
    ('unicode: Arabic-Indic digits with comma', u'\u0661,\u0662'),
    ('unicode: period before Arabic-Indic digit', u'x.\u0663'),
    ('unicode: period before fullwidth digit', u'x.\uff12'),
    ('unicode: information separators are whitespace', u'red\x1cblue\x1fgreen'),
    ('unicode: next line and no-break space are whitespace', u'red\x85blue\u00a0green'),
    ('unicode: BOM and zero-width space are not whitespace', u'red\ufeffblue\u200bgreen'),
    ('unicode: Mongolian vowel separator (space in 2.7 only)', u'red\u180eblue'),
    ('unicode: ideographic space', u'red\u3000blue'),
]

# (rule, answers (strings or records), prediction)
def ids(xs):
    return [{'answer': a, 'answer_id': i + 1} for i, a in enumerate(xs)]

QUESTIONS = [
    ('leave-one-out: 0 matches', ids(['red'] * 5 + ['blue'] * 5), 'green'),
    ('leave-one-out: 1 match', ids(['red'] + ['blue'] * 9), 'red'),
    ('leave-one-out: 2 matches', ids(['red'] * 2 + ['blue'] * 8), 'red'),
    ('leave-one-out: 3 matches', ids(['red'] * 3 + ['blue'] * 7), 'red'),
    ('leave-one-out: 4 matches', ids(['red'] * 4 + ['blue'] * 6), 'red'),
    ('leave-one-out: 10 matches', ids(['red'] * 10), 'red'),
    ('all identical: prediction not normalised', ids(['yes'] * 10), 'Yes'),
    ('all identical: prediction whitespace still cleaned', ids(['yes'] * 10), ' yes\n'),
    ('all identical: trailing period not removed', ids(['yes'] * 10), 'yes.'),
    ('all identical after whitespace cleaning', ids(['yes'] * 9 + [' yes\t']), 'Yes'),
    ('answers differ: prediction normalised', ids(['yes'] * 9 + ['Yes']), 'YES.'),
    ('answers differ: answers normalised too', ids(['Two'] * 3 + ['2'] * 3 + ['two.'] * 4), '2'),
    ('answers differ only in case', ids(['Red'] * 5 + ['red'] * 5), 'red'),
    ('number of answers other than 10', ids(['red', 'red', 'blue']), 'red'),
    ('a single answer can never match another', ids(['red']), 'red'),
    ('records without answer_id: equal records left out together', [{'answer': 'yes'}] * 10, 'yes'),
    ('records without answer_id: answers differ', [{'answer': 'yes'}] * 6 + [{'answer': 'no'}] * 4, 'yes'),
    ('records equal by Python ==: 1, 1.0 and true', [{'answer': 'yes', 'answer_id': 1}, {'answer': 'yes', 'answer_id': 1.0},
                                                      {'answer': 'yes', 'answer_id': True}, {'answer': 'yes', 'answer_id': 2},
                                                      {'answer': 'no', 'answer_id': 3}], 'yes'),
    ('records differing only in confidence', [{'answer': 'yes', 'answer_confidence': c} for c in ['yes', 'maybe', 'no', 'yes']] + [{'answer': 'no'}], 'yes'),
    ('unicode prediction, answers differ', ids([u'\u0130stanbul'] * 5 + ['istanbul'] * 5), u'\u0130STANBUL'),
    ('unicode digits with comma, answers differ', ids([u'\u0661,\u0662'] * 4 + [u'\u0661\u0662'] * 6), u'\u0661\u0662'),
]

# Values to round to 2 decimals: accuracies as the official code forms them, 100*k/n, which hit
# exact halves (e.g. 100*1/32 = 3.125) and near-halves; plus some negatives and large values.
ROUNDING = sorted(set([repr(100.0 * k / n) for n in (8, 16, 32, 40, 64, 80, 160, 200, 320, 400, 800)
                       for k in range(0, n + 1, max(1, n // 80))] +
                      ['2.675', '1.005', '0.125', '0.375', '-0.125', '-2.5', '1e-07', '123456.785', '0.0049999999999999',
                       '0.005', '0.015', '0.025', '99.995', '99.985', '5e-324', '1e+300']), key=float)
# Sequences to sum() (as the official code sums accuracies): plain vs compensated float sums.
SUMS = [['0.1'] * 10, ['0.3333333333333333'] * 9 + ['0.0'], ['0.6666666666666666', '0.3333333333333333', '1.0'] * 7,
        ['1e16', '1.0', '-1e16'], ['0.1', '0.2', '0.3'], ['0.9'] * 11 + ['0.3'] * 13]

RUNNER = r'''
import sys, json
sys.path.insert(0, sys.argv[1])
from vqaEval import VQAEval
class Q(object):
    def __init__(self, qa): self.qa = qa
    def getQuesIds(self): return list(self.qa.keys())
spec = json.loads(open(sys.argv[2]).read())
raw = []
orig = VQAEval.setEvalQA
def record(self, quesId, acc):
    raw.append(acc)
    return orig(self, quesId, acc)
VQAEval.setEvalQA = record
ev = VQAEval(Q({}), Q({}), n=2)
texts = []
for rule, t in spec['texts']:
    texts.append({'punct': ev.processPunctuation(t), 'digitArticle': ev.processDigitArticle(t),
                  'both': ev.processDigitArticle(ev.processPunctuation(t))})
questions = []
for rule, answers, pred in spec['questions']:
    gts = {1: {'question_id': 1, 'question_type': 't', 'answer_type': 'a', 'answers': answers}}
    res = {1: {'question_id': 1, 'answer': pred}}
    e = VQAEval(Q(gts), Q(res), n=2)
    out = sys.stdout
    sys.stdout = open('/dev/null', 'w')
    try:
        e.evaluate()
    finally:
        sys.stdout = out
    questions.append({'accuracy': repr(raw[-1]),
                      'evalQA': repr(e.evalQA[1]),
                      'processedAnswers': [a['answer'] for a in gts[1]['answers']]})
rounding = [repr(round(float(v), 2)) for v in spec['rounding']]
sums = [repr(sum(float(x) for x in seq)) for seq in spec['sums']]
sys.stdout.write(json.dumps({'texts': texts, 'questions': questions, 'rounding': rounding, 'sums': sums}))
'''


def port(src):
    out = []
    for line in src.split('\n'):
        lead = re.match(r'[ \t]*', line).group(0)
        rest = line[len(lead):]
        col = 0
        for ch in lead:
            col = col + 8 - col % 8 if ch == '\t' else col + 1
        m = re.match(r'print (.*)$', rest)
        out.append(' ' * col + ('print(%s)' % m.group(1) if m else rest))
    return '\n'.join(out)


def run(python, official, py3, spec_path):
    d = tempfile.mkdtemp()
    try:
        src = open(os.path.join(official, 'PythonEvaluationTools/vqaEvaluation/vqaEval.py')).read()
        open(os.path.join(d, 'vqaEval.py'), 'w').write(port(src) if py3 else src)
        open(os.path.join(d, 'runner.py'), 'w').write(RUNNER)
        out = subprocess.run([python, os.path.join(d, 'runner.py'), d, spec_path], check=True,
                             stdout=subprocess.PIPE, env=dict(os.environ, PYTHONIOENCODING='utf-8',
                                                              PYTHONWARNINGS='ignore')).stdout
        return json.loads(out.decode('utf-8'))
    finally:
        shutil.rmtree(d)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--official', required=True)
    ap.add_argument('--python2', required=True)
    ap.add_argument('--python3', required=True)
    ap.add_argument('--python312', required=True)
    a = ap.parse_args()
    spec = {'texts': TEXTS, 'questions': QUESTIONS, 'rounding': ROUNDING, 'sums': SUMS}
    fd, spec_path = tempfile.mkstemp(suffix='.json')
    os.write(fd, json.dumps(spec).encode('utf-8'))
    os.close(fd)
    results = {}
    for name, py, py3 in (('python2', a.python2, False), ('python3', a.python3, True), ('python3.12', a.python312, True)):
        results[name] = run(py, a.official, py3, spec_path)
    os.remove(spec_path)
    texts = []
    for i, (rule, t) in enumerate(TEXTS):
        texts.append({'rule': rule, 'text': t,
                      'expected': dict((k, results[k]['texts'][i]) for k in results)})
    questions = []
    for i, (rule, answers, pred) in enumerate(QUESTIONS):
        questions.append({'rule': rule, 'answers': answers, 'prediction': pred,
                          'expected': dict((k, {'accuracy': float(results[k]['questions'][i]['accuracy']),
                                                'evalQA': float(results[k]['questions'][i]['evalQA']),
                                                'processedAnswers': results[k]['questions'][i]['processedAnswers']})
                                           for k in results)})
    json.dump({'about': 'Generated by scripts/gen/vqa_metric_cases.py: expected values are what the official '
                        'vqaEval.py returned under CPython 2.7.18 (python2), 3.11.7 (python3) and 3.12.1 (python3.12).',
               'texts': texts, 'questions': questions,
               'rounding': [{'value': v, 'round2': dict((k, results[k]['rounding'][i]) for k in results)}
                            for i, v in enumerate(ROUNDING)],
               'sums': [{'values': seq, 'sum': dict((k, results[k]['sums'][i]) for k in results)}
                        for i, seq in enumerate(SUMS)]}, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write('\n')


if __name__ == '__main__':
    main()

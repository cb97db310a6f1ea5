/**
 * `vqalab export onnx --web`: a one-page browser demo beside the exported files. OUT/index.html loads
 * transformers.js (its self-contained browser build, with onnxruntime-web's WebAssembly runtime
 * copied into OUT/web/) and the model from OUT itself — nothing from the network. The user drops an
 * image, types a question and sees the policy's greedy answer, computed in the page.
 *
 * Serve OUT's parent over HTTP (browsers do not run WebAssembly modules from file:// pages), e.g.
 * `npx http-server OUT/..` or `python3 -m http.server -d OUT/..`, and open /<folder>/index.html.
 */
import { existsSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The runtime files copied into OUT/web/: [package folder, file]. */
const RUNTIME: [string, string][] = [
  ['@huggingface/transformers/dist', 'transformers.min.js'],
  ['onnxruntime-web/dist', 'ort-wasm-simd-threaded.asyncify.mjs'],
  ['onnxruntime-web/dist', 'ort-wasm-simd-threaded.asyncify.wasm'],
];

function findPackageFile(rel: string): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const f = path.join(dir, 'node_modules', rel);
    if (existsSync(f)) return f;
    const up = path.dirname(dir);
    if (up === dir)
      throw new Error(`cannot find node_modules/${rel} (install @huggingface/transformers and onnxruntime-web)`);
    dir = up;
  }
}

export const DEMO_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>vqalab policy (ONNX, in the browser)</title>
<style>
  body { font: 15px system-ui, sans-serif; max-width: 760px; margin: 2em auto; color: #222; }
  #drop { border: 2px dashed #888; border-radius: 8px; padding: 1.5em; text-align: center; cursor: pointer; }
  #drop.over { background: #eef; }
  #preview { max-width: 224px; max-height: 224px; display: block; margin: 1em auto; }
  #q { width: 70%; font: inherit; padding: .3em; }
  #answer { font-size: 1.4em; font-weight: 600; min-height: 1.4em; }
  #status { color: #666; }
</style>
</head>
<body>
<h1>Ask the trained policy</h1>
<p id="status">loading the model…</p>
<div id="drop">drop an image here, or click to choose one<input id="file" type="file" accept="image/*" hidden></div>
<img id="preview" alt="">
<p><input id="q" value="What color is the shape?"> <button id="ask" disabled>Ask</button></p>
<p>Answer: <span id="answer"></span></p>
<script type="module">
import { env, Qwen2Tokenizer, Qwen2VLImageProcessor, Qwen2VLForConditionalGeneration, RawImage } from './web/transformers.min.js';

// everything from this folder: no hub, no CDN
const here = new URL('./', location.href);
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = new URL('../', here).href;
env.backends.onnx.wasm.wasmPaths = new URL('./web/', here).href;
env.backends.onnx.wasm.numThreads = 1;
const id = decodeURIComponent(here.pathname.split('/').filter(Boolean).pop());
const config = await (await fetch(new URL('config.json', here))).json();
const dtype = config['transformers.js_config']?.dtype ?? 'fp32';

const json = async (name) => (await fetch(new URL(name, here))).json();
const $ = (s) => document.querySelector(s);
let image = null;
// the tokenizer and image processor from this folder's files (transformers.js's Auto* classes look
// for them through the hub's metadata in a browser)
const [tokJson, tokConfig, preConfig] = await Promise.all([json('tokenizer.json'), json('tokenizer_config.json'), json('preprocessor_config.json')]);
const tokenizer = new Qwen2Tokenizer(tokJson, tokConfig);
const imageProcessor = new Qwen2VLImageProcessor(preConfig);
const model = await Qwen2VLForConditionalGeneration.from_pretrained(id, { dtype, device: 'wasm' });
$('#status').textContent = 'ready (' + dtype + ', onnxruntime-web)';
$('#ask').disabled = false;

async function setImage(file) {
  const url = URL.createObjectURL(file);
  $('#preview').src = url;
  $('#drop').removeAttribute('data-loaded');
  image = await RawImage.fromURL(url);
  $('#drop').dataset.loaded = '1';
}
$('#drop').onclick = () => $('#file').click();
$('#file').onchange = (e) => e.target.files[0] && setImage(e.target.files[0]);
$('#drop').ondragover = (e) => { e.preventDefault(); $('#drop').classList.add('over'); };
$('#drop').ondragleave = () => $('#drop').classList.remove('over');
$('#drop').ondrop = (e) => { e.preventDefault(); $('#drop').classList.remove('over'); if (e.dataTransfer.files[0]) setImage(e.dataTransfer.files[0]); };

$('#ask').onclick = async () => {
  if (!image) { $('#status').textContent = 'drop an image first'; return; }
  $('#ask').disabled = true;
  $('#answer').removeAttribute('data-done');
  $('#answer').textContent = '…';
  const messages = [{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: $('#q').value }] }];
  let text = tokenizer.apply_chat_template(messages, { add_generation_prompt: true, tokenize: false });
  const { pixel_values, image_grid_thw } = await imageProcessor(image);
  // one <|image_pad|> per merged patch (what Qwen2VLProcessor does)
  const [t, h, w] = Array.from(image_grid_thw.data).map(Number);
  text = text.replace('<|image_pad|>', '<|image_pad|>'.repeat((t * h * w) / preConfig.merge_size ** 2));
  const { input_ids, attention_mask } = tokenizer(text);
  const out = await model.generate({ input_ids, attention_mask, pixel_values, image_grid_thw, max_new_tokens: 16, do_sample: false });
  const ids = Array.from(out.data).slice(input_ids.dims[1]).map(Number);
  const answer = tokenizer.decode(ids, { skip_special_tokens: true }).trim();
  $('#answer').textContent = answer;
  $('#answer').dataset.ids = JSON.stringify(ids);
  $('#answer').dataset.done = '1';
  $('#ask').disabled = false;
};
</script>
</body>
</html>
`;

/** Write OUT/index.html and OUT/web/ (the runtime); returns the files written. */
export async function writeWebDemo(outDir: string): Promise<{ name: string; bytes: number }[]> {
  const files: { name: string; bytes: number }[] = [];
  await fsp.mkdir(path.join(outDir, 'web'), { recursive: true });
  for (const [pkg, f] of RUNTIME) {
    const src = findPackageFile(path.join(pkg, f));
    await fsp.copyFile(src, path.join(outDir, 'web', f));
    files.push({ name: `web/${f}`, bytes: (await fsp.stat(src)).size });
  }
  await fsp.writeFile(path.join(outDir, 'index.html'), DEMO_PAGE);
  files.push({ name: 'index.html', bytes: Buffer.byteLength(DEMO_PAGE) });
  return files;
}

"""Jupyter's protocol test suite (Debian python3-jupyter-kernel-test) for the vqalab kernel, plus
the behaviours that suite does not cover: interrupts, aborting queued cells, stop_on_error=false,
live display updates, binary MIME data, the shorthand-property fix, Node types.

Run by test/kernel/jupyter.test.ts with the kernelspec installed into a temporary prefix
(JUPYTER_PATH) and the current directory outside the package.
"""
import base64
import os
import time
import unittest

import jupyter_kernel_test as jkt
from jupyter_kernel_test.msgspec_v5 import validate_message

TIMEOUT = 60


class VqalabKernelTests(jkt.KernelTests):
    kernel_name = os.environ.get("VQALAB_KERNEL_NAME", "vqalab")
    language_name = "typescript"
    file_extension = ".ts"

    code_hello_world = 'console.log("hello, world")'
    code_stderr = 'console.error("oops")'

    completion_samples = [
        {"text": "Math.ma", "matches": {"max"}},
        {"text": "const abcdef = 1; abcd", "matches": {"abcdef"}},
        # The preloaded runtime: the namespace and the names in scope.
        {"text": "vqalab.util.valida", "matches": {"validate"}},
        {"text": "interruptSig", "matches": {"interruptSignal"}},
    ]
    complete_code_samples = ["let x = 1;", "console.log(1)", "function f() {}"]
    incomplete_code_samples = ["function f() {", "let y = [", "const o = {"]
    invalid_code_samples = []  # TypeScript's parser recovers; tslab reports complete or incomplete

    code_inspect_sample = "vqalab.util.validate.expectInteger"
    code_generate_error = 'throw new Error("boom")'
    code_execute_result = [
        {"code": "1 + 2", "result": "3"},
        {"code": '"a" + "b"', "result": "'ab'"},
        # Node's types, with the notebook outside the package.
        {"code": 'const buf: Buffer = Buffer.from("hi"); buf.length', "result": "2"},
    ]
    code_display_data = [
        {"code": 'display({"text/html": "<b>hi</b>", "text/plain": "hi"})', "mime": "text/html"},
        {
            "code": 'display({"application/vnd.vqalab.metrics.v1+json": {runs: []}, "text/html": "<b>m</b>", "text/plain": "m"})',
            "mime": "application/vnd.vqalab.metrics.v1+json",
        },
        # Notebooks written for tslab keep working.
        {"code": 'import * as tslab from "tslab"; tslab.display.html("<i>t</i>")', "mime": "text/html"},
    ]
    code_history_pattern = "1 + *"
    supported_history_operations = ("tail", "range", "search")
    code_clear_output = "clearOutput()"

    # ── helpers ────────────────────────────────────────────────────────────────────────────────

    def run_cell(self, code, **kwargs):
        """Execute and collect (reply, [iopub messages]) up to the idle status."""
        self.flush_channels()
        msg_id = self.kc.execute(code, **kwargs)
        return self.collect(msg_id)

    def collect(self, msg_id, timeout=TIMEOUT):
        reply = None
        while reply is None:
            msg = self.kc.get_shell_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") == msg_id:
                reply = msg
        outputs = []
        while True:
            msg = self.kc.get_iopub_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            validate_message(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
            outputs.append(msg)
        return reply, outputs

    def of_type(self, outputs, msg_type):
        return [m["content"] for m in outputs if m["msg_type"] == msg_type]

    # ── beyond the standard suite ──────────────────────────────────────────────────────────────

    def test_kernel_info_details(self):
        self.flush_channels()
        self.kc.kernel_info()
        reply = self.kc.get_shell_msg(timeout=TIMEOUT)
        content = reply["content"]
        self.assertEqual(content["status"], "ok")
        self.assertEqual(content["implementation"], "vqalab")
        self.assertRegex(content["language_info"]["version"], r"^\d+\.\d+\.\d+$")
        self.assertIn("TypeScript", content["banner"])

    def test_comm_info(self):
        self.flush_channels()
        msg_id = self.kc.comm_info()
        reply = self.kc.get_shell_msg(timeout=TIMEOUT)
        validate_message(reply, "comm_info_reply", msg_id)
        self.assertEqual(reply["content"], {"status": "ok", "comms": {}})

    def test_error_content_and_execute_input(self):
        reply, outputs = self.run_cell('const pre = 1;\nthrow new RangeError("out of range")')
        self.assertEqual(reply["content"]["status"], "error")
        self.assertEqual(reply["content"]["ename"], "RangeError")
        self.assertEqual(reply["content"]["evalue"], "out of range")
        [error] = self.of_type(outputs, "error")
        self.assertEqual(error["ename"], "RangeError")
        self.assertTrue(error["traceback"][0].startswith("RangeError: out of range"))
        [inp] = self.of_type(outputs, "execute_input")
        self.assertEqual(inp["execution_count"], reply["content"]["execution_count"])
        # A type error names the line and column.
        reply, outputs = self.run_cell('const wrong: number = "text";')
        self.assertEqual(reply["content"]["ename"], "TSError")
        self.assertIn("1:7", reply["content"]["evalue"])

    def test_shorthand_property_of_an_earlier_name(self):
        reply, _ = self.run_cell("const shortN = 7;")
        self.assertEqual(reply["content"]["status"], "ok")
        reply, outputs = self.run_cell("({ shortN })")
        self.assertEqual(reply["content"]["status"], "ok", reply["content"])
        [result] = self.of_type(outputs, "execute_result")
        self.assertEqual(result["data"]["text/plain"], "{ shortN: 7 }")

    def test_stop_on_error_false_runs_the_next_cell(self):
        self.flush_channels()
        first = self.kc.execute('throw new Error("first")', stop_on_error=False)
        second = self.kc.execute("40 + 2")
        reply1, _ = self.collect(first)
        reply2, outputs = self.collect(second)
        self.assertEqual(reply1["content"]["status"], "error")
        self.assertEqual(reply2["content"]["status"], "ok")
        self.assertEqual(self.of_type(outputs, "execute_result")[0]["data"]["text/plain"], "42")

    def test_cells_queued_behind_a_failure_are_aborted(self):
        self.flush_channels()
        failing = self.kc.execute('throw new Error("stop here")')
        queued = [self.kc.execute("abortedSideEffect = 1"), self.kc.execute("2")]
        reply, _ = self.collect(failing)
        self.assertEqual(reply["content"]["status"], "error")
        for msg_id in queued:
            r, outputs = self.collect(msg_id)
            self.assertEqual(r["content"], {"status": "aborted"})
            # Not run: nothing but its busy status (idle ends the collection).
            self.assertEqual([m["msg_type"] for m in outputs], ["status"])
        # Aborting ends with the queue: the next request runs.
        reply, _ = self.run_cell("3")
        self.assertEqual(reply["content"]["status"], "ok")

    def test_display_update_in_place_and_png(self):
        reply, outputs = self.run_cell(
            'const id = newDisplayId(); display({"text/plain": "v1"}, { displayId: id });\n'
            'display({"text/plain": "v2"}, { displayId: id, update: true });\n'
            'display({"image/png": new Uint8Array([137, 80, 78, 71]), "text/plain": "png"});'
        )
        self.assertEqual(reply["content"]["status"], "ok", reply["content"])
        shown = self.of_type(outputs, "display_data")
        updated = self.of_type(outputs, "update_display_data")
        self.assertEqual(shown[0]["data"]["text/plain"], "v1")
        self.assertEqual(updated[0]["data"]["text/plain"], "v2")
        self.assertEqual(updated[0]["transient"]["display_id"], shown[0]["transient"]["display_id"])
        self.assertEqual(base64.b64decode(shown[1]["data"]["image/png"]), bytes([137, 80, 78, 71]))

    def wait_for_output(self, msg_id, text, timeout=TIMEOUT):
        """Wait until the cell `msg_id` printed `text` (it is running); return the messages seen."""
        seen = []
        deadline = time.time() + timeout
        while time.time() < deadline:
            msg = self.kc.get_iopub_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            seen.append(msg)
            if msg["msg_type"] == "stream" and text in msg["content"]["text"]:
                return seen
        self.fail("the cell never printed %r" % text)

    def test_interrupt_async_loop_keeps_kernel_and_state(self):
        self.run_cell("let loopSteps = 0;")
        self.flush_channels()
        msg_id = self.kc.execute(
            "const sig = interruptSignal();\n"
            "while (!sig.aborted) {\n"
            "  loopSteps++;\n"
            '  if (loopSteps === 2) console.log("started");  // after an await: the loop runs asynchronously\n'
            "  await new Promise((r) => setTimeout(r, 10));\n"
            "}\n"
            "`stopped after ${loopSteps}`"
        )
        self.wait_for_output(msg_id, "started")
        self.km.interrupt_kernel()
        reply, outputs = self.collect(msg_id)
        self.assertEqual(reply["content"]["status"], "error")
        self.assertEqual(reply["content"]["ename"], "InterruptedError")
        [result] = self.of_type(outputs, "execute_result")
        self.assertRegex(result["data"]["text/plain"], r"^'stopped after \d+'$")
        # The kernel lives, and the next cell sees the state the loop left, in a fresh scope.
        reply, outputs = self.run_cell("[`stopped after ${loopSteps}`, interruptSignal().aborted]")
        self.assertEqual(reply["content"]["status"], "ok")
        text = self.of_type(outputs, "execute_result")[0]["data"]["text/plain"]
        self.assertEqual(text, "[ %s, false ]" % result["data"]["text/plain"])

    def test_interrupt_synchronous_loop(self):
        self.flush_channels()
        # "started" only once the loop is spinning: printed before the loop, an interrupt on a loaded
        # machine could land before the first iteration (spins still 0).
        msg_id = self.kc.execute('let spins = 0;\nwhile (true) { if (++spins === 100000) console.log("started"); }')
        self.wait_for_output(msg_id, "started")
        self.km.interrupt_kernel()
        reply, _ = self.collect(msg_id)
        self.assertEqual(reply["content"]["ename"], "InterruptedError")
        reply, outputs = self.run_cell("spins >= 100000")
        self.assertEqual(reply["content"]["status"], "ok")
        self.assertEqual(self.of_type(outputs, "execute_result")[0]["data"]["text/plain"], "true")

    def test_interrupt_training_run_leaves_trainer_resumable(self):
        """The issue's case: GRPO training (Trainer.run on the CPU engine) interrupted mid-run stops
        at a step boundary; the kernel lives and the same trainer trains on."""
        reply, _ = self.run_cell(
            'import os from "node:os";\n'
            'import path from "node:path";\n'
            'import { mkdtempSync } from "node:fs";\n'
            'const tdir = mkdtempSync(path.join(os.tmpdir(), "vqalab-kt-"));\n'
            'await vqalab.data.writeSynth(tdir, { images: 16, seed: 0, quiet: true });\n'
            'const tdata = await vqalab.VqaDataset.fromParquet(path.join(tdir, "synth.parquet"));\n'
            'const tpolicy = await vqalab.LocalPolicy.load(vqalab.model.DEFAULT_MODEL_DIR, { threads: 1 });\n'
            "const trainer = new Trainer({ model: tpolicy.model, tokenizer: tpolicy.tokenizer, train: [...tdata], rewards: [vqaAccuracy()],\n"
            "  vqaAccuracy: (p, a) => vqalab.eval.scoreVqa(p, a).accuracy,\n"
            "  loadImages: (s) => Promise.all([s.imagePath].map((f) => tpolicy.image(f))),\n"
            "  config: { promptsPerStep: 2, numGenerations: 2, maxCompletionLength: 4 } });"
        )
        self.assertEqual(reply["content"]["status"], "ok", reply["content"])
        self.flush_channels()
        msg_id = self.kc.execute(
            "let stepsSeen = 0;\n"
            'const run = await trainer.run({ steps: 100000, onStep: () => { if (++stepsSeen === 2) console.log("training"); } });\n'
            "run.stoppedBy"
        )
        self.wait_for_output(msg_id, "training")
        self.km.interrupt_kernel()
        reply, outputs = self.collect(msg_id)
        self.assertEqual(reply["content"]["ename"], "InterruptedError")
        self.assertEqual(self.of_type(outputs, "execute_result")[0]["data"]["text/plain"], "'abort'")
        reply, outputs = self.run_cell(
            "const before = trainer.globalStep;\n"
            "const again = await trainer.run({ steps: 2 });\n"
            "[again.stoppedBy, again.stepsRun, trainer.globalStep - before, stepsSeen >= 2]"
        )
        self.assertEqual(reply["content"]["status"], "ok", reply["content"])
        self.assertEqual(self.of_type(outputs, "execute_result")[0]["data"]["text/plain"], "[ 'steps', 2, 2, true ]")

    def test_interrupt_lands_early(self):
        """Interrupting right after sending (the cell still compiling) stops it; pressing again
        if the first press came before the request arrived, as a user would."""
        self.flush_channels()
        msg_id = self.kc.execute("await new Promise((r) => setTimeout(r, 600000))")
        reply = None
        for _ in range(20):
            self.km.interrupt_kernel()
            try:
                reply = self.kc.get_shell_msg(timeout=3)
            except Exception:
                continue
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        self.assertIsNotNone(reply)
        self.assertEqual(reply["content"]["ename"], "InterruptedError")
        reply, _ = self.run_cell("1")
        self.assertEqual(reply["content"]["status"], "ok")


if __name__ == "__main__":
    unittest.main()

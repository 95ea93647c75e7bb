#!/usr/bin/python3
"""fpn_detect over a collection in pieces: --shard K/N, --resume FILE.jsonl, tools/merge_results.py
and the Slurm recipe of examples/slurm/, each checked against one uninterrupted fpn_detect run.

  /usr/bin/python3 tests/app/test_shards.py --detect BUILD/examples/fpn_detect [unittest arguments]

The images are ten seeded shape scenes (tools/fpn_tools/shapes.py) of 256 x 256..400, the model
the bundled demo. "Equal" means byte for byte: the merged or resumed results file and images file
are the very bytes of the single run's. The Slurm test (class Slurm) starts munged, slurmctld and
slurmd on localhost in a temporary directory, runs examples/slurm/submit.sh and stops them.
"""
import argparse
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from fpn_tools import shapes  # noqa: E402

MERGE = os.path.join(ROOT, "tools", "merge_results.py")
SUBMIT = os.path.join(ROOT, "examples", "slurm", "submit.sh")
PATHS = argparse.Namespace()  # set in __main__: detect
SCENES = 10
WORK = None  # the module's directory: scenes/ and the single run's outputs (setUpModule)
SINGLE = {}  # "json", "images": the single uninterrupted run's bytes


def environment():
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "passive")  # see test_cli.py's run()
    return env


def run(*args, cwd=None, program=None):
    return subprocess.run([program or PATHS.detect, *map(str, args)], capture_output=True,
                          text=True, timeout=600, env=environment(), cwd=cwd or WORK)


def merge(*args, cwd=None):
    return run(*args, cwd=cwd, program=MERGE)


def read(path, mode="rb"):
    with open(path, mode) as f:
        return f.read()


def make_scenes(folder, count=SCENES, first_seed=0):
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    for k in range(count):
        rgb, _ = shapes.make_scene(500_000 + first_seed + k, 256, 256 + 16 * k)
        Image.fromarray(rgb).save(os.path.join(folder, f"scene_{first_seed + k:02d}.png"))


def setUpModule():
    global WORK
    WORK = tempfile.mkdtemp(prefix="fpn_shards_")
    make_scenes(os.path.join(WORK, "scenes"))
    result = run("--json", "single.json", "scenes")
    assert result.returncode == 0, result.stderr
    SINGLE["json"] = read(os.path.join(WORK, "single.json"))
    SINGLE["images"] = read(os.path.join(WORK, "single.images.json"))
    assert SINGLE["json"].count(b'"image_id"') >= 2 * SCENES, "too few detections to compare"


def tearDownModule():
    shutil.rmtree(WORK)


class ShardTestCase(unittest.TestCase):
    def setUp(self):
        # Relative paths from WORK, the same in every run: file_name is part of the results.
        self.out = tempfile.mkdtemp(prefix="out_", dir=WORK)

    def tearDown(self):
        shutil.rmtree(self.out)

    def path(self, name):
        return os.path.join(self.out, name)

    def assert_exit(self, result, code):
        self.assertEqual(result.returncode, code,
                         f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")

    def shard(self, k, n, *extra, inputs=("scenes",)):
        return run("--shard", f"{k}/{n}", "--resume", self.path(f"shard_{k}.jsonl"),
                   "--json", self.path(f"shard_{k}.json"), *extra, *inputs)

    def log_lines(self, name):
        return read(self.path(name)).decode().splitlines()

    def assert_equals_single(self, json_path):
        self.assertEqual(read(json_path), SINGLE["json"])
        self.assertEqual(read(json_path[:-len(".json")] + ".images.json"), SINGLE["images"])


class ShardSpecs(ShardTestCase):
    def test_bad_specs_are_usage_errors(self):
        for spec in ("0/0", "5/4", "4/4", "-1/4", "1/-4", "junk", "1/", "/4", "1/4x", " 1/4",
                     "1.0/4", "+1/4", "1/4/2"):
            with self.subTest(spec=spec):
                result = run("--shard", spec, "--json", self.path("out.json"), "scenes")
                self.assert_exit(result, 2)
                self.assertIn(f"fpn_detect: --shard {spec}", result.stderr.replace("'", ""))
                self.assertIn("0-based", result.stderr)
                self.assertIn("Run with --help", result.stderr)
                self.assertEqual(os.listdir(self.out), [])

    def test_help_documents_shard_and_resume(self):
        result = run("--help")
        self.assert_exit(result, 0)
        for text in ("--shard", "K is 0-based", "SLURM_ARRAY_TASK_ID", "--resume",
                     "merge_results.py", "examples/slurm/"):
            self.assertIn(text, result.stdout)

    def test_resume_must_not_be_an_output(self):
        result = run("--resume", self.path("out.json"), "--json", self.path("out.json"), "scenes")
        self.assert_exit(result, 2)
        self.assertIn("would be overwritten by --json's outputs", result.stderr)


class Shards(ShardTestCase):
    def test_four_shards_merge_to_the_single_run(self):
        single = [json.loads(line.rstrip(","))
                  for line in SINGLE["json"].decode().splitlines()[1:-1]]
        for k in range(4):
            result = self.shard(k, 4)
            self.assert_exit(result, 0)
            mine = [i for i in range(SCENES) if i % 4 == k]
            self.assertIn(f"shard {k}/4: {len(mine)} of {SCENES} images, 0 already in",
                          result.stdout)
            # The shard's own --json: its images' entries of the single run, ids unchanged.
            entries = json.loads(read(self.path(f"shard_{k}.json")))
            self.assertEqual(entries, [e for e in single if e["image_id"] in mine])
            images = json.loads(read(self.path(f"shard_{k}.images.json")))
            self.assertEqual([image["id"] for image in images], mine)
            lines = self.log_lines(f"shard_{k}.jsonl")
            self.assertEqual(json.loads(lines[0])["shard"], f"{k}/4")
            self.assertEqual([json.loads(line)["image_id"] for line in lines[1:]], mine)
        result = merge("--json", self.path("all.json"),
                       *(self.path(f"shard_{k}.jsonl") for k in (2, 0, 3, 1)))
        self.assert_exit(result, 0)
        self.assertIn(f"merged 4 shards: {SCENES} images", result.stdout)
        self.assert_equals_single(self.path("all.json"))

    def test_more_shards_than_images(self):
        # Shards 10 and 11 of 12 hold no image: empty outputs, and the merge still equals.
        for k in range(12):
            self.assert_exit(self.shard(k, 12), 0)
        self.assertEqual(read(self.path("shard_11.json")), b"[]\n")
        self.assertEqual(self.log_lines("shard_11.jsonl")[1:], [])
        result = merge("--json", self.path("all.json"),
                       *(self.path(f"shard_{k}.jsonl") for k in range(12)))
        self.assert_exit(result, 0)
        self.assert_equals_single(self.path("all.json"))


class MergeRefusals(ShardTestCase):
    """Each refusal: exit status 1, a message saying what and where, and no output written."""

    @classmethod
    def setUpClass(cls):
        cls.logs = tempfile.mkdtemp(prefix="logs_", dir=WORK)
        for k in range(4):
            result = run("--shard", f"{k}/4",
                         "--resume", os.path.join(cls.logs, f"shard_{k}.jsonl"), "scenes")
            assert result.returncode == 0, result.stderr

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.logs)

    def setUp(self):
        super().setUp()
        self.restore_logs()

    def restore_logs(self):
        for k in range(4):
            shutil.copy(os.path.join(self.logs, f"shard_{k}.jsonl"), self.path(f"shard_{k}.jsonl"))

    def replace_shard(self, k, n, *extra, **inputs):
        """The good logs, but shard k's from another run."""
        self.restore_logs()
        os.remove(self.path(f"shard_{k}.jsonl"))
        self.assert_exit(self.shard(k, n, *extra, **inputs), 0)

    def assert_refused(self, message, logs=None):
        logs = logs if logs is not None else [self.path(f"shard_{k}.jsonl") for k in range(4)]
        result = merge("--json", self.path("all.json"), *logs)
        self.assert_exit(result, 1)
        self.assertIn(message, result.stderr)
        self.assertFalse(os.path.exists(self.path("all.json")))
        self.assertFalse(os.path.exists(self.path("all.images.json")))
        return result

    def edit_lines(self, k, edit):
        lines = self.log_lines(f"shard_{k}.jsonl")
        with open(self.path(f"shard_{k}.jsonl"), "w") as f:
            f.write("".join(line + "\n" for line in edit(lines)))

    def test_gap_from_an_unfinished_shard(self):
        self.edit_lines(1, lambda lines: lines[:-1])  # shard 1/4 holds 1, 5, 9: 9 is lost
        self.assert_refused("1 of 10 images are in no log (ids 9): shard 1/4 did not finish; "
                            "run them again with the same --resume file")

    def test_torn_last_line_counts_as_missing(self):
        last = self.log_lines("shard_2.jsonl")[-1]
        self.edit_lines(2, lambda lines: lines[:-1])
        with open(self.path("shard_2.jsonl"), "a") as f:
            f.write(last[:len(last) // 2])
        self.assert_refused("1 of 10 images are in no log (ids 6): shard 2/4")

    def test_image_twice_in_a_log(self):
        self.edit_lines(0, lambda lines: lines + [lines[1]])
        self.assert_refused(f"'{self.path('shard_0.jsonl')}' line 5: image 0 "
                            "(scenes/scene_00.png) is in the log twice")

    def test_image_in_another_shards_log(self):
        moved = self.log_lines("shard_1.jsonl")[1]
        self.edit_lines(0, lambda lines: lines + [moved])
        self.assert_refused("line 5: image_id 1 is not an image of shard 0/4 of 10 images")

    def test_shard_given_twice_and_shard_missing(self):
        logs = [self.path(f"shard_{k}.jsonl") for k in (0, 1, 2, 2)]
        self.assert_refused(f"shard 2/4 is given twice: '{logs[2]}' and '{logs[3]}'", logs)
        self.assert_refused("shard 3/4 of 4 is missing: give every shard's results log", logs[:3])
        self.assert_refused(f"cannot read results log '{self.path('nowhere.jsonl')}'",
                            logs[:3] + [self.path("nowhere.jsonl")])

    def test_shards_of_other_runs(self):
        # Another model's options, another input list, another N, other weights' bytes.
        self.replace_shard(3, 4, "--score-thresh", "0.5")
        self.assert_refused('are shards of different runs: their "score_thresh" is 0.05 and 0.5')
        shutil.copytree(os.path.join(WORK, "scenes"), self.path("more"))
        make_scenes(self.path("more"), count=1, first_seed=SCENES)
        self.replace_shard(3, 4, inputs=[self.path("more")])
        self.assert_refused('are shards of different runs: their "inputs" is {"count": 10')
        self.replace_shard(1, 3)
        self.assert_refused("the logs are of different shard counts:")
        weights = self.path("weights.safetensors")
        shutil.copy(os.path.join(os.path.dirname(PATHS.detect), "demo_shapes_maskrcnn.safetensors"),
                    weights)
        with open(weights, "r+b") as f:  # one byte of the last tensor's data
            f.seek(-1, os.SEEK_END)
            byte = f.read(1)
            f.seek(-1, os.SEEK_END)
            f.write(bytes([byte[0] ^ 1]))
        self.replace_shard(1, 4, "--weights", weights)
        self.assert_refused('are shards of different runs: their "weights" is {"bytes": ')


class KillAndResume(ShardTestCase):
    def resume_command(self, *extra):
        return [PATHS.detect, "--threads", "1", "--resume", self.path("run.jsonl"),
                "--json", self.path("run.json"), *extra, "scenes"]

    def logged_ids(self):
        lines = self.log_lines("run.jsonl")
        self.assertEqual(json.loads(lines[0])["format"], "fpn_detect results log 1")
        return [json.loads(line)["image_id"] for line in lines[1:]]

    def test_sigkill_midway_then_resume_equals_the_uninterrupted_run(self):
        process = subprocess.Popen(self.resume_command(), cwd=WORK, env=environment(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        try:
            while time.monotonic() < deadline and process.poll() is None:
                if os.path.exists(self.path("run.jsonl")) and \
                        read(self.path("run.jsonl")).count(b"\n") >= 3:  # header + 2 images
                    break
                time.sleep(0.005)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        self.assertEqual(process.returncode, -signal.SIGKILL, "the run ended before the kill")
        done = self.logged_ids()
        self.assertGreaterEqual(len(done), 2)
        self.assertLess(len(done), SCENES, "killed too late to test resuming")
        self.assertEqual(done, list(range(len(done))))
        self.assertFalse(os.path.exists(self.path("run.json")), "--json is written only at the end")

        result = run(*self.resume_command()[1:])
        self.assert_exit(result, 0)
        self.assertIn(f"shard 0/1: {SCENES} of {SCENES} images, {len(done)} already in",
                      result.stdout)
        self.assertIn(f"{SCENES - len(done)} images in ", result.stdout)
        self.assertEqual(self.logged_ids(), list(range(SCENES)))  # nothing lost or twice
        self.assert_equals_single(self.path("run.json"))

        # Once more: everything is in the log, nothing is run, the outputs are the same.
        result = run(*self.resume_command()[1:])
        self.assert_exit(result, 0)
        self.assertIn(f"{SCENES} already in", result.stdout)
        self.assertIn("0 images in ", result.stdout)
        self.assert_equals_single(self.path("run.json"))

    def test_torn_last_line_is_cut_off(self):
        self.assert_exit(run(*self.resume_command()[1:]), 0)
        lines = read(self.path("run.jsonl")).splitlines(keepends=True)
        torn = lines[7][:len(lines[7]) // 2]  # a kill in the middle of image 6's write
        with open(self.path("run.jsonl"), "wb") as f:
            f.write(b"".join(lines[:7]) + torn)
        os.remove(self.path("run.json"))
        result = run(*self.resume_command()[1:])
        self.assert_exit(result, 0)
        self.assertIn(f"cut off its torn last line ({len(torn)} bytes)", result.stderr)
        self.assertIn("6 already in", result.stdout)
        self.assertEqual(read(self.path("run.jsonl")), b"".join(lines))
        self.assert_equals_single(self.path("run.json"))

    def test_a_log_of_another_run_is_refused_and_left_alone(self):
        self.assert_exit(self.shard(1, 4), 0)
        before = read(self.path("shard_1.jsonl"))
        for extra, message in (
                (("--score-thresh", "0.5"), '"score_thresh" is 0.05, this run\'s is 0.5'),
                (("--min-size", "256"), '"min_size" is 0, this run\'s is 256'),
                (("--exif-transpose",), '"exif_transpose" is false, this run\'s is true')):
            with self.subTest(extra=extra):
                result = self.shard(1, 4, *extra)
                self.assert_exit(result, 1)
                self.assertIn(f"resume file '{self.path('shard_1.jsonl')}' was written by another "
                              f"run: its {message}", result.stderr)
        result = run("--shard", "2/4", "--resume", self.path("shard_1.jsonl"), "scenes")
        self.assert_exit(result, 1)
        self.assertIn('its "shard" is "1/4", this run\'s is "2/4"', result.stderr)
        self.assertEqual(read(self.path("shard_1.jsonl")), before)
        with open(self.path("notes.jsonl"), "w") as f:
            f.write('{"hello": 1}\n')
        result = run("--resume", self.path("notes.jsonl"), "scenes")
        self.assert_exit(result, 1)
        self.assertIn("is not an fpn_detect results log", result.stderr)

    def test_a_log_in_use_is_refused(self):
        with open(self.path("run.jsonl"), "w") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            result = run(*self.resume_command()[1:])
        self.assert_exit(result, 1)
        self.assertIn("is in use by another process (the same shard running twice?)", result.stderr)
        self.assertEqual(read(self.path("run.jsonl")), b"")

    def test_unreadable_image_is_logged_and_retried(self):
        folder = self.path("scenes")
        shutil.copytree(os.path.join(WORK, "scenes"), folder)
        scene = os.path.join(folder, "scene_03.png")
        shutil.move(scene, scene + ".good")
        with open(scene, "wb") as f:
            f.write(b"not a png")
        command = ["--resume", self.path("run.jsonl"), "--json", self.path("run.json"), folder]
        result = run(*command)
        self.assert_exit(result, 1)
        self.assertIn("1 of 10 images could not be read", result.stderr)
        records = [json.loads(line) for line in self.log_lines("run.jsonl")[1:]]
        self.assertEqual(len(records), SCENES)
        self.assertIn("error", records[3])
        shutil.move(scene + ".good", scene)  # the file server is back
        result = run(*command)
        self.assert_exit(result, 0)
        self.assertIn(f"{SCENES - 1} already in", result.stdout)
        self.assertIn("1 images in ", result.stdout)
        expected = run("--json", self.path("expected.json"), folder)
        self.assert_exit(expected, 0)
        self.assertEqual(read(self.path("run.json")), read(self.path("expected.json")))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSlurm:
    """munged, slurmctld and slurmd on localhost, everything under `directory`; stop() ends
    exactly the processes start() began (by their pid files)."""

    def __init__(self, directory):
        self.directory = directory
        self.socket = os.path.join(directory, "munge", "munge.socket")
        self.conf = os.path.join(directory, "slurm.conf")
        self.env = environment()
        self.env["SLURM_CONF"] = self.conf

    def file(self, *parts):
        return os.path.join(self.directory, *parts)

    def start(self):
        for sub in ("munge", "state", "spool", "log"):
            os.makedirs(self.file(sub), mode=0o700, exist_ok=True)
        with open(self.file("munge", "munge.key"), "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(self.file("munge", "munge.key"), 0o400)
        subprocess.run(["munged", "--force", f"--socket={self.socket}",
                        f"--key-file={self.file('munge', 'munge.key')}",
                        f"--log-file={self.file('munge', 'munged.log')}",
                        f"--pid-file={self.file('munge', 'munged.pid')}",
                        f"--seed-file={self.file('munge', 'munged.seed')}"], check=True)
        with open(self.conf, "w") as f:
            f.write(f"""ClusterName=fpntest
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.socket}
StateSaveLocation={self.file('state')}
SlurmdSpoolDir={self.file('spool')}
SlurmctldPidFile={self.file('slurmctld.pid')}
SlurmdPidFile={self.file('slurmd.pid')}
SlurmctldLogFile={self.file('log', 'slurmctld.log')}
SlurmdLogFile={self.file('log', 'slurmd.log')}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""")
        subprocess.run(["slurmctld", "-i"], env=self.env, check=True)
        subprocess.run(["slurmd", "-N", "localhost"], env=self.env, check=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True,
                                   text=True).stdout.strip()
            if state == "idle":
                return
            time.sleep(0.5)
        raise RuntimeError(f"the Slurm node did not come up (sinfo: {state!r})\n" + self.logs())

    def logs(self):
        text = ""
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.file("log", name)
            if os.path.exists(path):
                text += f"--- {name}\n" + "".join(read(path, "r").splitlines(True)[-20:])
        return text

    def stop(self):
        subprocess.run(["scontrol", "shutdown"], env=self.env, capture_output=True)
        for pid_file in ("slurmd.pid", "slurmctld.pid", os.path.join("munge", "munged.pid")):
            try:
                pid = int(read(self.file(pid_file), "r"))
            except (OSError, ValueError):
                continue
            if pid_file.endswith("munged.pid"):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.2)
            else:
                os.kill(pid, signal.SIGKILL)

    def job_state(self, job):
        result = subprocess.run(["scontrol", "show", "job", job], env=self.env,
                                capture_output=True, text=True)
        return [field.split("=", 1)[1] for field in result.stdout.split()
                if field.startswith("JobState=")]


class Slurm(ShardTestCase):
    """examples/slurm/submit.sh on a real single-node Slurm: a 4-task array and the merge."""

    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            self.skipTest("!!! the Slurm test starts slurmd, which needs root (CI runs as root)")
        self.slurm = LocalSlurm(tempfile.mkdtemp(prefix="slurm_", dir="/tmp"))
        self.addCleanup(shutil.rmtree, self.slurm.directory)
        self.addCleanup(self.slurm.stop)
        self.slurm.start()

    def test_array_job_and_merge_equal_the_single_run(self):
        out = os.path.relpath(self.path("run"), WORK)
        env = dict(self.slurm.env, FPN_DETECT=PATHS.detect, FPN_CPUS_PER_TASK="1")
        submitted = subprocess.run([SUBMIT, "4", out, "scenes"], cwd=WORK, env=env,
                                   capture_output=True, text=True, timeout=120)
        self.assert_exit(submitted, 0)
        array_job, merge_job = submitted.stdout.split()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            states = self.slurm.job_state(merge_job)
            if states and states[0] not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
                break
            time.sleep(0.5)
        self.assertEqual(states, ["COMPLETED"], "the merge job: " +
                         read(self.path("run/logs/merge.out"), "r") + self.slurm.logs())
        self.assertEqual(self.slurm.job_state(array_job), ["COMPLETED"] * 4)
        for k in range(4):
            log = read(self.path(f"run/logs/shard_{k}.out"), "r")
            self.assertIn(f"shard {k}/4 on ", log)
            self.assertIn(", 1 threads, job ", log)
            self.assertEqual(len(self.log_lines(f"run/shard_{k}.jsonl")),
                             1 + len(range(k, SCENES, 4)))
        self.assertIn(f"merged 4 shards: {SCENES} images",
                      read(self.path("run/logs/merge.out"), "r"))
        self.assert_equals_single(self.path("run/results.json"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detect", required=True, help="the built fpn_detect")
    PATHS, rest = parser.parse_known_args()
    PATHS.detect = os.path.abspath(PATHS.detect)
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)

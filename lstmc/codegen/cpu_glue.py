"""The run-time glue of a CPU module: `_launch`, `_launch_columns` and `_launch_chunks`, plain
Python that takes the kernel object's checked, packed arguments to the compiled functions
(`_prologue`, `_rows`, `_cols`) and runs them on the threads the call's plan chose
(lstmc_runtime.threads)."""

from __future__ import annotations

from lstmc.codegen.module import lookup


class CpuGlue:
    """Needs from the emitter: ns, sched, columns, columns_data(), value_name(),
    prologue_values(), prologue_args(), split_hoisted(), rows_args(), cols_args()."""

    def launch_lines(self) -> list[str]:
        """`_launch`: the run-time glue from checked, packed arguments to the two functions."""
        ns = self.ns

        def arg(a: str, whole: bool = False) -> str:
            """The glue's expression for argument `a`; `whole`: state rows not chunked."""
            rows = "" if whole else "[b0:b1]"
            if a == "x":
                return "x"
            if (key := lookup(ns, "st", a)) is not None:
                return f"state[{key!r}]{rows}"
            if (key := lookup(ns, "nx", a)) is not None:
                return f"spare[{key!r}]{rows}"
            if a in {w.name for w in self.sched.weights.values()}:
                return f"arrays[{a!r}]"
            if (key := lookup(ns, "p", a)) is not None:
                return f"arrays[{key!r}]"
            if (key := lookup(ns, "y", a)) is not None:
                return f"outputs[{key!r}]"
            if (key := lookup(ns, "n", a)) is not None:
                return f"sizes[{key!r}]"
            if a == "work":
                return "work.get('prologue', _NO_WORK)"
            raise AssertionError(a)

        pro = [self.value_name(n) for n in self.prologue_values()]
        call = ", ".join(arg(a) for a in self.prologue_args()[:-4])
        hoisted_call = (
            "_prologue(" + call.replace("work.get('prologue', _NO_WORK)", "pro[-1]") + ", "
        )
        # How the batch split makes the hoisted values: each thread its rows' for all steps (one
        # hand-off a call), as a product a step over its rows; or, for a weight larger than L2,
        # which such products would read from L3 every step (one core, [8, 512] x [512, 2048]:
        # 95 GFLOP/s a step against 132 over all steps), all rows of ranges of steps first.
        small = " and ".join(
            f"arrays[{w!r}].nbytes < _L2_BYTES" for w in sorted(self.hoisted_weights)
        )
        by_rows = [f"    by_rows = {small or 'True'}"]
        # One chunk (a serial run): the prologue sizes the workspace and makes every step's
        # hoisted values in one call; else it only sizes it here, and the chunks fill it. A
        # call into compiled code costs ~2 us of a small call's ~20.
        prologue = "\n".join(
            [
                "    one = getattr(run_chunks, 'chunks', 1) == 1  # a single chunk of rows",
                "    T, B = (x.shape[0], x.shape[1]) if one else (0, 0)  # else no step yet",
                f"    pro = _prologue({call}, 0, T, 0, B)",
                "    work['prologue'] = pro[-1]  # kept for this thread's next call",
            ]
        )
        pro_units = [self.value_name(n) for n in self.prologue_values(self.split_hoisted())]
        prologue_units = (
            f"    pro = _prologue_units({call}, 0, x.shape[0], 0, x.shape[1])\n"
            "    work['prologue'] = pro[-1]  # kept for this thread's next call"
            if pro_units
            else "    pro = ()  # the prologue's only work, the input projection, is per thread"
        )
        # The chunks' threads write their rows of the spare state side by side, every other
        # step, as they do the state's (which Kernel.__call__ aligns): from 128 bytes on, the
        # rows where two chunks meet share no cache line (where the cut falls on 128 bytes of
        # rows, as it does for most sizes: lstmc_runtime.kernel.ALIGN).
        spare = (
            "    spare = {name: np.empty_like(a) for name, a in state.items()} if one"
            " else aligned_like(state)  # split: each array on 128 bytes"
        )
        lines = [
            "def _launch(x, state, arrays, outputs, sizes, run_chunks, work):",
            '    """Run the prologue, then the time loop, on chunks of batch rows (in parallel',
            "    when `run_chunks` splits the batch), and return the final state. `work` holds",
            '    this thread\'s scratch memory from call to call. Run-time glue."""',
            prologue,
            spare,
            "",
            *by_rows,
            "",
            "    def rows(b0, b1):  # a chunk of rows: its hoisted values, then its time loop",
            "        if by_rows and not one:",
            "            " + hoisted_call + "0, x.shape[0], b0, b1)",
            *self.call_lines(
                "_rows",
                self.rows_args(),
                lambda a: (
                    a if a in ("b0", "b1") else (f"pro[{pro.index(a)}]" if a in pro else arg(a))
                ),
            ),
            "",
            "    if not (by_rows or one):  # all rows of ranges of steps first, on the threads",
            "        run_chunks(lambda t0, t1: "
            + hoisted_call
            + "t0, t1, 0, x.shape[1]), x.shape[0])",
            "    run_chunks(rows, x.shape[1])",
            "    return state if x.shape[0] % 2 == 0 else spare",
        ]
        if self.columns is None:
            return lines
        split = set(self.columns_data())

        def cols_arg(a: str) -> str:
            if a in ("k", "threads", "e0", "e1", "flags"):
                return a
            if a in ("b0", "b1"):
                return {"b0": "0", "b1": "x.shape[1]"}[a]
            if a == "work":
                return "work.get(('cols', k), _NO_WORK)"
            if a in pro_units:
                return f"pro[{pro_units.index(a)}]"
            return f"blocks[k][{a!r}]" if a in split else arg(a, whole=True)

        def chunk_arg(a: str) -> str:
            if a in ("k", "threads"):
                return {"k": "part", "threads": "1"}[a]
            if a in ("e0", "e1", "flags", "b0", "b1"):
                return a
            if a == "work":
                return "work.get(('chunk', b0), _NO_WORK)"
            if a in pro_units:
                return f"pro[{pro_units.index(a)}]"
            if lookup(ns, "y", a) is not None:
                return arg(a)  # outputs are whole: `_cols` writes rows b0 + r
            return f"block[{a!r}]" if a in split else arg(a)

        columns_prologue = (
            prologue_units
            if self.split_hoisted()
            else f"    pro = _prologue({call}, 0, x.shape[0], 0, x.shape[1])  # all of it, here\n"
            "    work['prologue'] = pro[-1]  # kept for this thread's next call"
        )
        lines += [
            "",
            "",
            "def _launch_columns(x, state, arrays, blocks, outputs, sizes, run_threads, work):",
            '    """Run the prologue, then the time loop with the step\'s units split across threads:',
            "    blocks[k] holds thread k's units and its blocks of the split weights. Returns the",
            '    final state. Run-time glue."""',
            columns_prologue,
            "    spare = aligned_like(state)  # one allocation, each array on 128 bytes",
            "",
            "    def cols(k, threads, flags):",
            "        e0, e1 = blocks[k]['units']",
            *self.call_lines("_cols", self.cols_args(), cols_arg, "work[('cols', k)] = "),
            "",
            "    run_threads(cols, len(blocks))",
            "    return state if x.shape[0] % 2 == 0 else spare",
            "",
            "",
            "def _launch_chunks(x, state, arrays, block, outputs, sizes, run_chunks, work):",
            '    """The batch split through `_cols`: each chunk of rows runs every unit on one',
            "    thread (`block`: the one-thread blocks of the split weights), its input",
            "    projection a few steps at a time, and waits for nobody; a one-thread call is",
            "    one chunk (`run_chunks` is threads.serial). Weights larger than L2",
            "    (which a product a step over a chunk's rows would read from L3 every step) take",
            '    `_launch` instead. Returns the final state. Run-time glue."""',
            f"    if not ({small or 'True'}):",
            "        return _launch(x, state, arrays, outputs, sizes, run_chunks, work)",
            columns_prologue,
            "    one = getattr(run_chunks, 'chunks', 1) == 1  # a single chunk of rows",
            spare,
            "    e0, e1 = block['units']",
            "",
            "    def rows(b0, b1, flags, part):  # part 0 is the caller's chunk",
            *self.call_lines("_cols", self.cols_args(), chunk_arg, "work[('chunk', b0)] = "),
            "",
            "    run_chunks(rows, x.shape[1], True)  # True: rows take part in the hand-shake",
            "    return state if x.shape[0] % 2 == 0 else spare",
        ]
        return lines

    @staticmethod
    def call_lines(fn: str, args: list[str], render, assign: str = "") -> list[str]:
        """A call of `fn` in the glue, one argument a line, each rendered by `render`."""
        return [f"        {assign}{fn}(", *(f"            {render(a)}," for a in args), "        )"]

"""The greedy-stacking result (sinktrain.lsg.stacking.greedy_stack) as a Markdown table.

    Path("stacking.md").write_text(markdown_table(result))

One row per step, like LSG's Table 2: step, layers, overall accuracy, gain over the stock
baseline (pp), then accuracy per task category.
"""

from __future__ import annotations


def markdown_table(result: dict) -> str:
    steps = result["steps"]
    categories = [c for c in steps[0]["per_category"] if c != "overall"]
    header = ["step", "layers", "accuracy %", "gain (pp)", *categories]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    for row in steps:
        cells = [str(row["step"]), row["label"], f"{row['accuracy']:.2f}", f"{row['gain']:+.2f}"]
        cells += [f"{row['per_category'].get(c, 0.0):.2f}" for c in categories]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

"""One module per stage (benchmark, validate, search, train, export, compare). Stages never
import each other: what two of them share lives in a lower layer."""

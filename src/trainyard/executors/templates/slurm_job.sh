#!/bin/bash
# @{trials} of experiment @{experiment} on pool @{pool}: written by
# trainyard.executors.slurm at each launch and kept beside the (host) trial's log for debugging.
echo "trainyard: SLURM job $SLURM_JOB_ID on $SLURM_JOB_NODELIST, @{num_slots} slot(s), $(date -Is)"
# A stop request (scancel --signal=TERM) reaches the workers' step only: they checkpoint,
# report and exit, and this script ends with srun's exit status.
@{setup}
export TRAINYARD_NUM_THREADS=@{threads} OMP_NUM_THREADS=@{threads}
@{rendezvous}
srun @{srun_options} @{task}

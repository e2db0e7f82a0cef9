package main

import (
	"path/filepath"
	"testing"
)

const evalTestdata = "../../../models/eval/testdata"

func TestModelsEval(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none")
	tests := []cliCase{
		{name: "no command", args: []string{"models"}, code: 2, stderr: []string{"usage: millwright models COMMAND", "eval --dataset"}},
		{name: "unknown command", args: []string{"models", "tune"}, code: 2, stderr: []string{`unknown command "tune", expected train, eval, subscribe, pull, approve, release or restore`}},
		{name: "help", args: []string{"models", "help"}, code: 0, stdout: []string{"train --config FILE", "eval --dataset", "subscribe --federation F", "pull --hub-key HEX", "approve MODEL@VERSION", "release MODEL@VERSION"}},
		{name: "subscribe help", args: []string{"models", "subscribe", "-h"}, code: 0, stdout: []string{"usage: millwright models subscribe", "F.latest", "-hub-key", "-lineage-wait"}},
		{name: "subscribe without a federation", args: []string{"models", "subscribe"}, code: 2, stderr: []string{"--federation is required"}},
		{name: "subscribe to a bad name", args: []string{"models", "subscribe", "--federation", "Pumps!"}, code: 2, stderr: []string{`--federation: "Pumps!" is not a valid name`}},
		{name: "subscribe to a channel without a ledger", args: []string{"models", "subscribe", "--federation", "pumps", "--channel", "stable"}, code: 2,
			stderr: []string{"--channel needs --ledger DIR or --fabric FILE"}},
		{name: "subscribe to a bad channel", args: []string{"models", "subscribe", "--federation", "pumps", "--channel", "../x", "--ledger", "."}, code: 2,
			stderr: []string{`--channel: "../x" is not a valid name`}},
		{name: "pull help", args: []string{"models", "pull", "-h"}, code: 0, stdout: []string{"usage: millwright models pull", "VERSION: rN, or latest", "-ledger"}},
		{name: "pull without a version", args: []string{"models", "pull", "pumps"}, code: 2, stderr: []string{`"pumps" is not FEDERATION@VERSION`}},
		{name: "pull without an argument", args: []string{"models", "pull", "--hub-key", "00"}, code: 2, stderr: []string{`0 arguments []; expected one, FEDERATION@VERSION`}},
		{name: "pull with two", args: []string{"models", "pull", "pumps@r1", "pumps@r2"}, code: 2, stderr: []string{`2 arguments ["pumps@r1" "pumps@r2"]; expected one`}},
		{name: "pull with flags after its argument", args: []string{"models", "pull", "pumps@r1", "--nope"}, code: 2, stderr: []string{"flag provided but not defined: -nope", "usage: millwright models pull", "-hub-key"}},
		{name: "subscribe with a stray argument", args: []string{"models", "subscribe", "--federation", "pumps", "extra"}, code: 2, stderr: []string{`millwright models subscribe: unexpected argument "extra"; it takes flags only`}},
		{name: "eval help", args: []string{"models", "eval", "-h"}, code: 0, stdout: []string{"published protocol", "-detector", "-subset"}},
		{
			name: "eval without flags", args: []string{"models", "eval"}, code: 2,
			stderr: []string{"--dataset is required: skab, nab or cmapss", "--dir is required"},
		},
		{
			name: "every bad flag at once", args: []string{"models", "eval", "--dataset", "kaggle", "--detector", "oracle"}, code: 2,
			stderr: []string{`--dataset "kaggle" is not known`, "--dir is required", `detector "oracle" is not known; expected one of pca,`},
		},
		{
			name: "negative overrides", args: []string{"models", "eval", "--dataset", "skab", "--dir", ".", "--window", "-1", "--threshold-factor", "-2"}, code: 2,
			stderr: []string{"--window -1 is negative", "--threshold-factor -2 is negative"},
		},
		{
			name: "overrides", args: []string{"models", "eval", "--dataset", "skab", "--dir", evalTestdata + "/skab", "--window", "3", "--threshold-factor", "1.5"}, code: 0,
			stdout: []string{"window overridden to 3 rows", "threshold factor overridden to 1.5", "millwright pca"},
		},
		{name: "unknown flag", args: []string{"models", "eval", "--frobnicate"}, code: 2, stderr: []string{"flag provided but not defined: -frobnicate"}},
		{name: "stray argument", args: []string{"models", "eval", "--dataset", "skab", "--dir", ".", "extra"}, code: 2, stderr: []string{`unexpected argument "extra"`}},
		{name: "missing directory", args: []string{"models", "eval", "--dataset", "skab", "--dir", missing}, code: 1, stderr: []string{"skab: reading " + missing}},
		{name: "missing nab labels", args: []string{"models", "eval", "--dataset", "nab", "--dir", missing}, code: 1, stderr: []string{"combined_windows.json"}},
		{name: "missing cmapss subset", args: []string{"models", "eval", "--dataset", "cmapss", "--dir", evalTestdata + "/cmapss", "--subset", "FD004"}, code: 1, stderr: []string{"train_FD004.txt"}},
		{
			name: "skab", args: []string{"models", "eval", "--dataset", "skab", "--dir", evalTestdata + "/skab", "--per-file"}, code: 0,
			stdout: []string{"1 files, 80 test rows", "millwright pca", "published Conv-AE", "changepoint detection", "valve1/0.csv"},
		},
		{
			name: "nab", args: []string{"models", "eval", "--dataset", "nab", "--dir", evalTestdata + "/nab", "--detector", "pca"}, code: 0,
			stdout: []string{"1 files, 1 anomaly windows", "standard", "reward_low_FP_rate", "reward_low_FN_rate"},
		},
		{
			name: "cmapss", args: []string{"models", "eval", "--dataset", "cmapss", "--dir", evalTestdata + "/cmapss", "--subset", "fd999", "--model", "ridge"}, code: 0,
			stdout: []string{"C-MAPSS FD999", "6 training engines, 3 test engines", "millwright rul ridge"},
		},
		{
			name: "tune-on needs skab", args: []string{"models", "eval", "--dataset", "nab", "--dir", ".", "--tune-on", "valve1"}, code: 2,
			stderr: []string{`--tune-on is for --dataset skab, not "nab"`},
		},
		{name: "tune-on unknown folder", args: []string{"models", "eval", "--dataset", "skab", "--dir", evalTestdata + "/skab", "--tune-on", "valve2"}, code: 1, stderr: []string{`folder "valve2" is not in the data`}},
		{name: "tune-on every folder", args: []string{"models", "eval", "--dataset", "skab", "--dir", evalTestdata + "/skab", "--tune-on", "valve1"}, code: 1, stderr: []string{"leaves nothing held out"}},
		{name: "bad regressor", args: []string{"models", "eval", "--dataset", "cmapss", "--dir", evalTestdata + "/cmapss", "--subset", "FD999", "--model", "forest"}, code: 2, stderr: []string{`model "forest" is unknown`}},
	}
	runCLICases(t, tests)
}

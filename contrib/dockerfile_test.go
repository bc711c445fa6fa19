package contrib_test

import (
	"encoding/json"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction: "COPY", and its arguments.
type instruction struct {
	cmd  string
	args string
}

// stage is one FROM and what follows it.
type stage struct {
	from  string // "golang:1.26-trixie AS build"
	instr []instruction
}

// parseDockerfile reads the instructions of each stage: comments dropped,
// continuation lines joined. Enough for the repository's own Dockerfile.
func parseDockerfile(t *testing.T, text string) []stage {
	t.Helper()
	var stages []stage
	var line string
	for _, l := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(l)
		if line == "" && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasSuffix(trimmed, `\`) {
			line += strings.TrimSuffix(trimmed, `\`) + " "
			continue
		}
		line += trimmed
		cmd, args, _ := strings.Cut(line, " ")
		line = ""
		cmd = strings.ToUpper(cmd)
		if cmd == "FROM" {
			stages = append(stages, stage{from: args})
			continue
		}
		if len(stages) == 0 {
			if cmd != "ARG" {
				t.Fatalf("Dockerfile: %s before the first FROM", cmd)
			}
			continue
		}
		s := &stages[len(stages)-1]
		s.instr = append(s.instr, instruction{cmd, strings.TrimSpace(args)})
	}
	if len(stages) == 0 {
		t.Fatal("Dockerfile: no FROM")
	}
	return stages
}

// finalStage is the stage the image is made of.
func finalStage(t *testing.T) stage {
	t.Helper()
	stages := parseDockerfile(t, readRepo(t, "Dockerfile"))
	return stages[len(stages)-1]
}

// one returns the arguments of the stage's only cmd instruction.
func (s stage) one(t *testing.T, cmd string) string {
	t.Helper()
	var found []string
	for _, in := range s.instr {
		if in.cmd == cmd {
			found = append(found, in.args)
		}
	}
	if len(found) != 1 {
		t.Fatalf("Dockerfile: the final stage has %d %s instructions, want 1", len(found), cmd)
	}
	return found[0]
}

// jsonArgs decodes an exec-form argument list, ["a", "b"].
func jsonArgs(t *testing.T, cmd, args string) []string {
	t.Helper()
	var list []string
	if err := json.Unmarshal([]byte(args), &list); err != nil {
		t.Fatalf("Dockerfile: %s %s is not the exec (JSON) form: %v", cmd, args, err)
	}
	return list
}

// copyFromBuild is one COPY --from=build of the final stage.
type copyFromBuild struct {
	src, dst, chown string
}

// copiesFromBuild lists what the final stage takes from the build stage,
// and fails on any other way in (a COPY from the context, a RUN).
func (s stage) copiesFromBuild(t *testing.T) []copyFromBuild {
	t.Helper()
	var copies []copyFromBuild
	for _, in := range s.instr {
		switch in.cmd {
		case "RUN", "ADD":
			t.Errorf("Dockerfile: %s in the final stage: it is FROM scratch", in.cmd)
		case "COPY":
			var c copyFromBuild
			var from string
			var rest []string
			for _, f := range strings.Fields(in.args) {
				switch {
				case strings.HasPrefix(f, "--from="):
					from = strings.TrimPrefix(f, "--from=")
				case strings.HasPrefix(f, "--chown="):
					c.chown = strings.TrimPrefix(f, "--chown=")
				default:
					rest = append(rest, f)
				}
			}
			if from != "build" || len(rest) != 2 {
				t.Fatalf("Dockerfile: COPY %s: the final stage takes one file or directory at a time from the build stage only", in.args)
			}
			c.src, c.dst = rest[0], rest[1]
			copies = append(copies, c)
		}
	}
	return copies
}

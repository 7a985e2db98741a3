package detect

import "testing"

func TestNodeEngines(t *testing.T) {
	for in, want := range map[string]string{
		"20.11.1":          "20.11.1",
		"v18.19.0":         "18.19.0",
		"20":               "20",
		"20.x":             "20",
		"^20.11.0":         "20",
		"~18.17":           "18",
		">=18":             "22",
		">= 18.0.0":        "22",
		">=24":             "24",
		">=18 <21":         "20",
		">=18.0.0 <20.5.0": "20",
		"<=20":             "20",
		"18.x || 20.x":     "20",
		"^18 || ^22":       "22",
		"^16 || >=22":      "22",
		"16 - 20":          "20",
		"*":                "22",
		"":                 "22",
		"nope":             "",
		">=99999":          "",
		"<1":               "",
		">=20 <18":         "",
	} {
		got, ok := nodeEngines(in)
		if got != want || ok != (want != "") {
			t.Errorf("nodeEngines(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestNodeVersionFile(t *testing.T) {
	for in, want := range map[string]string{
		"20\n":         "20",
		"v20.11.1\r\n": "20.11.1",
		"lts/iron":     "20",
		"lts/Jod":      "22",
		"lts/*":        "22",
		"node":         "22",
		"20.x":         "20",
		"lts/unknown":  "",
		"system":       "",
		"20\nRUN x":    "20",
		"20 RUN x":     "",
	} {
		got, ok := nodeVersionFile(in)
		if got != want || ok != (want != "") {
			t.Errorf("nodeVersionFile(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestGoVersion(t *testing.T) {
	for in, want := range map[string]string{
		"module x\n\ngo 1.22\n":                              "1.22",
		"module x\n\ngo 1.22.3\n":                            "1.22",
		"module x\ngo 1.21.0\ntoolchain go1.23.4\n":          "1.23",
		"module x\ngo 1.24 // comment\ntoolchain go1.22.1\n": "1.24",
		"module x\n":                    "",
		"module x\ngo 1.22; RUN evil\n": "",
	} {
		got, ok := goVersion([]byte(in))
		if got != want || ok != (want != "") {
			t.Errorf("goVersion(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestPHPVersion(t *testing.T) {
	for in, want := range map[string]string{
		"^8.2":         "8.4",
		">=8.1":        "8.4",
		"^8.2|^8.3":    "8.4",
		"^8.2 || ^8.3": "8.4",
		"~8.3.0":       "8.3",
		"8.2.*":        "8.2",
		"^7.4":         "7.4",
		">=8.1 <8.3":   "8.1",
		"*":            "",
	} {
		got, ok := phpVersion(in)
		if got != want || ok != (want != "") {
			t.Errorf("phpVersion(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestRubyVersions(t *testing.T) {
	for in, want := range map[string]string{"3.3.0\n": "3.3.0", "ruby-3.2.2": "3.2.2", "3.4": "3.4", "jruby-9.4": "", "3": ""} {
		if got, _ := rubyVersion(in); got != want {
			t.Errorf("rubyVersion(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{`ruby "3.3.0"`: "3.3.0", "ruby '~> 3.2'": "3.2", `ruby file: ".ruby-version"`: ""} {
		if got, _ := gemfileRubyVersion([]byte("source 'x'\n" + in + "\n")); got != want {
			t.Errorf("gemfileRubyVersion(%q) = %q, want %q", in, got, want)
		}
	}
	if got, _ := gemfileLockRubyVersion([]byte("DEPENDENCIES\n  rails\n\nRUBY VERSION\n   ruby 3.3.6p108\n\nBUNDLED WITH\n")); got != "3.3.6" {
		t.Errorf("gemfileLockRubyVersion = %q", got)
	}
}

package githubemu_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"fmt"

	"github.com/zeitwork/zeitwork/internal/githubemu"
)

// Example shows a test's setup: an App, a user who signs in, the App
// installed on the user's account with one repository backed by a local
// git directory, and a signed push delivered to the webhook under test.
func Example() {
	key, err := rsa.GenerateKey(rand.Reader, 2048) // the client under test signs the App's JWT with it
	if err != nil {
		panic(err)
	}
	emu := githubemu.New(githubemu.App{
		ID: 1, Slug: "zeitwork", PublicKey: &key.PublicKey,
		ClientID: "Iv1.x", ClientSecret: "secret", WebhookSecret: "hook-secret",
	})
	srv, err := emu.Listen("127.0.0.1")
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	// Point the code under test at srv.APIURL (REST API and OAuth alike).

	emu.AddUser(githubemu.User{Login: "alice", Emails: []githubemu.Email{{Email: "alice@example.com", Primary: true, Verified: true}}})
	emu.ApproveAs("alice") // the authorize endpoint signs in as alice
	inst, _ := emu.AddInstallation(githubemu.Installation{Account: "alice"})
	_, _ = emu.AddRepository(inst.ID, githubemu.Repository{Owner: "alice", Name: "app", Dir: "/path/to/a/git/repository"})

	ev, err := emu.Push(context.Background(), "alice/app", "main", "")
	if err != nil {
		panic(err)
	}
	_, status, err := emu.Deliver(context.Background(), "http://127.0.0.1:8080/v1/webhook/github", ev)
	fmt.Println(status, err)
}
